package gitrepo

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// copyWorkers is how many files are copied at once.
const copyWorkers = 4

// copyTree copies the tree at src into dst, which must not exist or be an
// empty dir: directories, regular files (with their permission bits and
// mtimes) and symlinks (as symlinks, never followed). Any other kind of file
// is an error. Every file is a new inode: nothing is linked. It stops when
// ctx ends.
func copyTree(ctx context.Context, src, dst string) error {
	type job struct {
		from, to string
		info     fs.FileInfo
	}
	jobs := make(chan job)
	errs := make(chan error, copyWorkers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range copyWorkers {
		wg.Go(func() {
			for j := range jobs {
				if err := copyFile(j.from, j.to, j.info); err != nil {
					errs <- err
					cancel()
					for range jobs {
					}
					return
				}
			}
		})
	}
	walkErr := filepath.WalkDir(src, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := entry.Info()
		if err != nil {
			return err
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil && !(rel == "." && errors.Is(err, fs.ErrExist)) {
				return err
			}
			// The final mode is set once the dir is filled, below.
			return nil
		case mode.IsRegular():
			select {
			case jobs <- job{from: path, to: target, info: info}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return fmt.Errorf("cannot copy %s: unsupported file type %v", path, mode.Type())
		}
	})
	close(jobs)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("failed to copy %s: %w", src, err)
	}
	if walkErr != nil {
		return fmt.Errorf("failed to copy %s: %w", src, walkErr)
	}
	// Directory modes last, so that a read-only dir can be filled first.
	return filepath.WalkDir(src, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || !entry.IsDir() {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		return os.Chmod(filepath.Join(dst, rel), info.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSticky))
	})
}

// copyFile copies one regular file into a new file, in the kernel where it
// can (copy_file_range), keeping its permission bits and mtime.
func copyFile(from, to string, info fs.FileInfo) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(info.Mode().Perm())
	}
	if err == nil {
		mtime := unix.NsecToTimespec(info.ModTime().UnixNano())
		err = unix.UtimesNanoAt(unix.AT_FDCWD, to, []unix.Timespec{mtime, mtime}, unix.AT_SYMLINK_NOFOLLOW)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// refreshIndexStat rewrites the cached stat data (ctime, mtime, device,
// inode) of every entry of the index of the repository at workTree, whose
// files were just copied unchanged from a clone whose index was up to date,
// so that git sees them as unmodified without reading them again, as in a
// fresh clone. It handles index versions 2 and 3 of SHA-1 repositories and
// leaves any other index alone (git then re-reads the files once, which is
// slower but just as correct).
func refreshIndexStat(workTree string) error {
	indexPath := filepath.Join(workTree, ".git", "index")
	data, err := os.ReadFile(indexPath)
	if err != nil {
		return err
	}
	const hashSize = sha1.Size
	if len(data) < 12+hashSize || string(data[:4]) != "DIRC" {
		return errors.New("not an index")
	}
	version := binary.BigEndian.Uint32(data[4:8])
	if version != 2 && version != 3 {
		return fmt.Errorf("index version %d not handled", version)
	}
	if sum := sha1.Sum(data[:len(data)-hashSize]); !bytes.Equal(sum[:], data[len(data)-hashSize:]) {
		return errors.New("index checksum mismatch (not a SHA-1 repository?)")
	}
	count := int(binary.BigEndian.Uint32(data[8:12]))
	const fixed = 40 + hashSize + 2 // stat data, object name, flags
	off := 12
	for range count {
		if off+fixed > len(data)-hashSize {
			return errors.New("index truncated")
		}
		entry := data[off:]
		flags := binary.BigEndian.Uint16(entry[40+hashSize:])
		nameStart := fixed
		if flags&0x4000 != 0 { // extended flags
			nameStart += 2
		}
		nameEnd := bytes.IndexByte(entry[nameStart:], 0)
		if nameEnd < 0 {
			return errors.New("index entry name not terminated")
		}
		name := string(entry[nameStart : nameStart+nameEnd])
		const gitlink = 0o160000
		if binary.BigEndian.Uint32(entry[24:])&0o170000 != gitlink {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(workTree, name), &st); err != nil {
				return fmt.Errorf("failed to stat %s: %w", name, err)
			}
			binary.BigEndian.PutUint32(entry[0:], uint32(st.Ctim.Sec))
			binary.BigEndian.PutUint32(entry[4:], uint32(st.Ctim.Nsec))
			binary.BigEndian.PutUint32(entry[8:], uint32(st.Mtim.Sec))
			binary.BigEndian.PutUint32(entry[12:], uint32(st.Mtim.Nsec))
			binary.BigEndian.PutUint32(entry[16:], uint32(st.Dev))
			binary.BigEndian.PutUint32(entry[20:], uint32(st.Ino))
		}
		// The entry, name and its NULs included, pads to a multiple of 8.
		length := nameStart + nameEnd + 1
		off += (length + 7) &^ 7
	}
	sum := sha1.Sum(data[:len(data)-hashSize])
	copy(data[len(data)-hashSize:], sum[:])
	tmp := indexPath + ".refresh"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, indexPath)
}
