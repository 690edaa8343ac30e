// Package oci writes single-layer OCI image tarballs (the OCI image layout in
// a tar file) with the standard library alone, so that test images can be
// made without docker or a registry and loaded with
// `ctr -n k8s.io images import FILE.tar`.
package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// File is one file of a layer: a regular file copied from the host, or a
// symlink when Link is set.
type File struct {
	// Path inside the image, as "/bin/sh".
	Path string
	// Source is the host file whose content and mode are copied.
	Source string
	// Link makes the entry a symlink to Link instead.
	Link string
	// Mode overrides the source's permission bits when non-zero.
	Mode fs.FileMode
}

// Image is what Write puts in the tarball.
type Image struct {
	// Name is the image reference ctr gives the imported image, fully
	// qualified, as "docker.io/library/volume-agent:dev".
	Name string
	// Rootfs is a host directory copied as the base of the layer (optional).
	Rootfs string
	// Files are added to the layer after Rootfs (and win over it).
	Files []File
	// Entrypoint, Cmd, Env and WorkingDir go into the image config.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
}

// epoch is the fixed modification time of every entry, so that the same input
// gives the same image.
var epoch = time.Unix(0, 0).UTC()

// Write writes img as an OCI layout tarball to w. Device files, sockets and
// fifos under Rootfs are skipped (the runtime provides /dev); hard links are
// kept as hard links.
func Write(w io.Writer, img Image) error {
	var layer bytes.Buffer
	if err := writeLayer(&layer, img); err != nil {
		return fmt.Errorf("failed to write the layer of %s: %w", img.Name, err)
	}
	layerDesc := descriptor("application/vnd.oci.image.layer.v1.tar", layer.Bytes())

	config, err := json.Marshal(map[string]any{
		"created":      epoch.Format(time.RFC3339),
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Env":        img.Env,
			"WorkingDir": img.WorkingDir,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	if err != nil {
		return err
	}
	configDesc := descriptor("application/vnd.oci.image.config.v1+json", config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configDesc,
		"layers":        []desc{layerDesc},
	})
	if err != nil {
		return err
	}
	manifestDesc := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc.Annotations = map[string]string{
		"io.containerd.image.name":          img.Name,
		"org.opencontainers.image.ref.name": img.Name[strings.LastIndex(img.Name, ":")+1:],
	}
	manifestDesc.Platform = map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []desc{manifestDesc},
	})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(configDesc), config},
		{blobPath(manifestDesc), manifest},
		{blobPath(layerDesc), layer.Bytes()},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteFile writes img to the file name, atomically.
func WriteFile(name string, img Image) error {
	tmp := name + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := Write(f, img); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, name)
}

type desc struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

func descriptor(mediaType string, data []byte) desc {
	sum := sha256.Sum256(data)
	return desc{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
}

func blobPath(d desc) string {
	return "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:")
}

func writeLayer(w io.Writer, img Image) error {
	tw := tar.NewWriter(w)
	written := map[string]bool{}
	if img.Rootfs != "" {
		if err := addTree(tw, img.Rootfs, img.Files, written); err != nil {
			return err
		}
	}
	for _, f := range img.Files {
		if err := addParents(tw, f.Path, written); err != nil {
			return err
		}
		if err := addFile(tw, f); err != nil {
			return err
		}
	}
	return tw.Close()
}

// addTree copies root's tree, skipping the paths files replace.
func addTree(tw *tar.Writer, root string, files []File, written map[string]bool) error {
	replaced := map[string]bool{}
	for _, f := range files {
		replaced[strings.TrimPrefix(path.Clean(f.Path), "/")] = true
	}
	links := map[uint64]string{} // inode -> first path, for hard links
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if replaced[rel] {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeSocket|fs.ModeNamedPipe) != 0:
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if info.IsDir() {
			hdr.Name += "/"
			written[rel] = true
		}
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Uname, hdr.Gname = "", ""
		if st, ok := info.Sys().(*syscall.Stat_t); ok && info.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				return tw.WriteHeader(hdr)
			}
			links[st.Ino] = rel
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		return copyFile(tw, p)
	})
}

// addParents writes the directories above p that are not written yet.
func addParents(tw *tar.Writer, p string, written map[string]bool) error {
	dir := path.Dir(strings.TrimPrefix(path.Clean(p), "/"))
	var missing []string
	for ; dir != "." && dir != "/" && !written[dir]; dir = path.Dir(dir) {
		missing = append(missing, dir)
	}
	sort.Strings(missing)
	for _, d := range missing {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
		written[d] = true
	}
	return nil
}

func addFile(tw *tar.Writer, f File) error {
	name := strings.TrimPrefix(path.Clean(f.Path), "/")
	if f.Link != "" {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: f.Link, Mode: 0o777, ModTime: epoch})
	}
	info, err := os.Stat(f.Source)
	if err != nil {
		return err
	}
	mode := info.Mode().Perm()
	if f.Mode != 0 {
		mode = f.Mode.Perm()
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: info.Size(), ModTime: epoch}); err != nil {
		return err
	}
	return copyFile(tw, f.Source)
}

func copyFile(w io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
