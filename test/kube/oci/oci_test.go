package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWrite reads the tarball back as containerd would: index.json names the
// image and points at a manifest whose config and layer blobs exist under
// their digests, and the layer holds the rootfs and the added files.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for name, content := range map[string]string{"etc/os-release": "ID=test\n", "usr/bin/tool": "#!/bin/sh\n"} {
		p := filepath.Join(rootfs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(rootfs, "usr/bin/tool"), filepath.Join(rootfs, "usr/bin/tool2")); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "agent")
	if err := os.WriteFile(bin, []byte("binary"), 0o700); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	err := Write(&buf, Image{
		Name:   "docker.io/library/volume-agent:dev",
		Rootfs: rootfs,
		Files: []File{
			{Path: "/usr/local/bin/volume-agent", Source: bin, Mode: 0o755},
			{Path: "/bin/sh", Link: "busybox"},
		},
		Entrypoint: []string{"/usr/local/bin/volume-agent"},
	})
	if err != nil {
		t.Fatal(err)
	}

	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[hdr.Name] = data
	}
	blob := func(digest string) []byte {
		t.Helper()
		data, ok := files["blobs/sha256/"+digest[len("sha256:"):]]
		if !ok {
			t.Fatalf("no blob %s", digest)
		}
		sum := sha256.Sum256(data)
		if "sha256:"+hex.EncodeToString(sum[:]) != digest {
			t.Fatalf("blob %s has the wrong digest", digest)
		}
		return data
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var index struct{ Manifests []desc }
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != "docker.io/library/volume-agent:dev" {
		t.Errorf("image name %q", got)
	}
	var manifest struct {
		Config desc
		Layers []desc
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v", err)
	}
	var config struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != manifest.Layers[0].Digest {
		t.Errorf("diff_ids %v, layer %s", config.RootFS.DiffIDs, manifest.Layers[0].Digest)
	}
	if len(config.Config.Entrypoint) != 1 {
		t.Errorf("entrypoint %v", config.Config.Entrypoint)
	}

	layer := map[string]*tar.Header{}
	contents := map[string]string{}
	lr := tar.NewReader(bytes.NewReader(blob(manifest.Layers[0].Digest)))
	for {
		hdr, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		layer[hdr.Name] = hdr
		data, _ := io.ReadAll(lr)
		contents[hdr.Name] = string(data)
	}
	for name, want := range map[string]string{"etc/os-release": "ID=test\n", "usr/local/bin/volume-agent": "binary"} {
		if contents[name] != want {
			t.Errorf("%s = %q, want %q", name, contents[name], want)
		}
	}
	if h := layer["usr/local/bin/volume-agent"]; h == nil || h.Mode != 0o755 {
		t.Errorf("volume-agent header %+v, want mode 0755", h)
	}
	for _, dir := range []string{"usr/", "usr/local/", "usr/local/bin/", "etc/"} {
		if h := layer[dir]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("no directory entry %s", dir)
		}
	}
	if h := layer["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
		t.Errorf("bin/sh = %+v, want a symlink to busybox", h)
	}
	tool, tool2 := layer["usr/bin/tool"], layer["usr/bin/tool2"]
	if tool == nil || tool2 == nil || (tool.Typeflag == tar.TypeLink) == (tool2.Typeflag == tar.TypeLink) {
		t.Errorf("want one of two hard-linked files stored as a link: %+v %+v", tool, tool2)
	}
}
