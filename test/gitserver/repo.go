package gitserver

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultBranch is the branch Init makes HEAD point at.
const DefaultBranch = "main"

// Repo is a bare repository on disk.
type Repo struct {
	// Dir is the repository's git dir.
	Dir string
	// commitTime is the time, in seconds since the epoch, of the next commit;
	// it grows by one per commit so that commits are ordered and ids are
	// reproducible.
	commitTime int64
}

// Mode is the mode of a tree entry.
type Mode int

const (
	// Regular is a non-executable file (100644). It is the zero value.
	Regular Mode = iota
	// Executable is an executable file (100755).
	Executable
	// Symlink is a symbolic link (120000) whose target is Entry.Content.
	Symlink
	// Gitlink is a submodule entry (160000) naming Entry.Commit.
	Gitlink
)

func (m Mode) octal() string {
	return [...]string{"100644", "100755", "120000", "160000"}[m]
}

// Entry is one path that a commit adds or replaces.
type Entry struct {
	// Path is the entry's path in the tree, with "/" separators.
	Path string
	// Mode is the entry's kind.
	Mode Mode
	// Content is a file's content, or a symlink's target.
	Content []byte
	// Commit is the commit id a Gitlink entry points at.
	Commit string
}

// File returns a Regular entry with the given content.
func File(path, content string) Entry {
	return Entry{Path: path, Content: []byte(content)}
}

// Init creates an empty bare repository at dir whose HEAD is DefaultBranch.
// The parent of dir must exist. Init fails if dir exists and is not empty.
func Init(dir string) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := runGit("", nil, "init", "--quiet", "--bare", "--initial-branch="+DefaultBranch, abs); err != nil {
		return nil, err
	}
	return &Repo{Dir: abs, commitTime: 1_700_000_000}, nil
}

// Open returns the existing repository at dir.
func Open(dir string) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	r := &Repo{Dir: abs, commitTime: 1_700_000_000}
	if _, err := r.Git("rev-parse", "--git-dir"); err != nil {
		return nil, fmt.Errorf("failed to open repository %q: %w", dir, err)
	}
	return r, nil
}

// Git runs git with args in the repository and returns its trimmed standard
// output.
func (r *Repo) Git(args ...string) (string, error) {
	return runGit("", nil, append([]string{"--git-dir=" + r.Dir}, args...)...)
}

// RevParse returns the full object id that rev names.
func (r *Repo) RevParse(rev string) (string, error) {
	return r.Git("rev-parse", "--verify", "--end-of-options", rev+"^{commit}")
}

// Commit writes a commit on branch whose tree is the branch's current tree
// (empty for a new branch) with entries added or replaced, and returns its
// id. A new branch starts with no parent.
func (r *Repo) Commit(branch, message string, entries ...Entry) (string, error) {
	ids, err := r.importCommits([]commit{{branch: branch, message: message, entries: entries}})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// Branch points branch at rev, creating or moving it.
func (r *Repo) Branch(branch, rev string) error {
	id, err := r.RevParse(rev)
	if err != nil {
		return err
	}
	_, err = r.Git("update-ref", "refs/heads/"+branch, id)
	return err
}

// Tag creates the tag name at rev: an annotated tag object when annotated,
// else a lightweight tag. An existing tag is replaced.
func (r *Repo) Tag(name, rev string, annotated bool) error {
	args := []string{"-c", "user.name=gitserver", "-c", "user.email=gitserver@example.invalid", "tag", "--force"}
	if annotated {
		args = append(args, "--annotate", "--message=tag "+name)
	}
	_, err := r.Git(append(args, "--", name, rev)...)
	return err
}

// SetHead points HEAD at branch, which becomes the default branch of clones.
func (r *Repo) SetHead(branch string) error {
	_, err := r.Git("symbolic-ref", "HEAD", "refs/heads/"+branch)
	return err
}

type commit struct {
	branch  string
	message string
	entries []Entry
}

// importCommits writes commits in order with one git fast-import and returns
// their ids.
func (r *Repo) importCommits(commits []commit) ([]string, error) {
	marks, err := os.CreateTemp("", "gitserver-marks-")
	if err != nil {
		return nil, err
	}
	marks.Close()
	defer os.Remove(marks.Name())

	var stream bytes.Buffer
	tips := map[string]bool{}
	for i, c := range commits {
		from := ""
		if !tips[c.branch] {
			if id, err := r.RevParse("refs/heads/" + c.branch); err == nil {
				from = id
			}
			tips[c.branch] = true
		}
		r.writeCommit(&stream, i+1, c.branch, from, c.message, c.entries)
	}
	if _, err := runGit("", &stream, "--git-dir="+r.Dir, "fast-import", "--quiet", "--force", "--date-format=raw", "--export-marks="+marks.Name()); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(marks.Name())
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(commits))
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var mark int
		var id string
		if _, err := fmt.Sscanf(line, ":%d %s", &mark, &id); err == nil && mark >= 1 && mark <= len(ids) {
			ids[mark-1] = id
		}
	}
	for i, id := range ids {
		if id == "" {
			return nil, fmt.Errorf("fast-import reported no id for commit %d", i+1)
		}
	}
	return ids, nil
}

// writeCommit writes one fast-import commit command. from, when set, is the
// parent of a branch that exists in the repository but not yet in this
// stream.
func (r *Repo) writeCommit(w io.Writer, mark int, branch, from, message string, entries []Entry) {
	r.writeCommitHeader(w, mark, branch, from, message)
	for _, e := range entries {
		writeEntry(w, e)
	}
	io.WriteString(w, "\n")
}

// writeCommitHeader writes a fast-import commit command up to its first file
// change; the caller writes the changes with writeEntry, then an empty line.
func (r *Repo) writeCommitHeader(w io.Writer, mark int, branch, from, message string) {
	when := r.commitTime
	r.commitTime++
	fmt.Fprintf(w, "commit refs/heads/%s\nmark :%d\n", branch, mark)
	fmt.Fprintf(w, "author Test Author <author@example.invalid> %d +0000\n", when)
	fmt.Fprintf(w, "committer Test Committer <committer@example.invalid> %d +0000\n", when)
	fmt.Fprintf(w, "data %d\n%s\n", len(message), message)
	if from != "" {
		fmt.Fprintf(w, "from %s\n", from)
	}
}

// writeEntry writes one fast-import file change that adds or replaces e.
func writeEntry(w io.Writer, e Entry) {
	if e.Mode == Gitlink {
		fmt.Fprintf(w, "M %s %s %s\n", e.Mode.octal(), e.Commit, quotePath(e.Path))
		return
	}
	fmt.Fprintf(w, "M %s inline %s\ndata %d\n", e.Mode.octal(), quotePath(e.Path), len(e.Content))
	w.Write(e.Content)
	io.WriteString(w, "\n")
}

// quotePath quotes a path for fast-import when it needs it.
func quotePath(p string) string {
	if strings.ContainsAny(p, "\"\n\\ ") {
		return fmt.Sprintf("%q", p)
	}
	return p
}

// Content is the kind of data Generate writes into files.
type Content int

const (
	// Text is lines of source-like text, which compress about as well as
	// source code does. It is the zero value.
	Text Content = iota
	// Random is incompressible bytes, like media or compressed assets. It is
	// cheap to make, and git stores it as it is.
	Random
)

func (c Content) String() string {
	if c == Random {
		return "random"
	}
	return "text"
}

// GenerateOptions size a generated history.
type GenerateOptions struct {
	// Branch receives the commits; DefaultBranch when empty.
	Branch string
	// Commits is the number of commits, at least 1. The first adds every
	// file; each later one changes one line (Text) or 64 bytes (Random) of
	// one file, the same file for runs of editRun commits, as a developer
	// edits a file over a few commits.
	Commits int
	// Files is the number of files, spread over directories of 100.
	Files int
	// FileSize is the approximate size of each file in bytes.
	FileSize int
	// Content is the kind of data in the files.
	Content Content
	// Seed makes the content reproducible: the same options give the same
	// commit ids.
	Seed uint64
}

// editRun is the number of consecutive commits that change the same file.
// git fast-import stores each blob as a delta against the blob before it in
// its input, so a run of edits of one file is stored as small deltas without
// the cost of a delta search (git repack -f).
const editRun = 10

// Generate writes a history shaped by opts in one git fast-import, then
// repacks it as a server's repository is (one pack with a bitmap index, so
// that a clone sends the pack as it is) without a new delta search. Its
// cost is about that of compressing the data once; it holds one file in
// memory at a time, plus the ones the history changes. It returns the id of
// the last commit.
func (r *Repo) Generate(opts GenerateOptions) (string, error) {
	if opts.Commits < 1 || opts.Files < 1 || opts.FileSize < 1 {
		return "", errors.New("generate needs at least one commit, one file and one byte per file")
	}
	if opts.Branch == "" {
		opts.Branch = DefaultBranch
	}
	from := ""
	if id, err := r.RevParse("refs/heads/" + opts.Branch); err == nil {
		from = id
	}

	args := []string{"--git-dir=" + r.Dir}
	if opts.Content == Random {
		// zlib cannot shrink random data, only spend time trying: store it
		// as zlib's stored blocks, which a compressing server also ends up
		// sending.
		args = append(args, "-c", "pack.compression=0")
	}
	cmd := gitCommand("", append(args, "fast-import", "--quiet", "--force", "--date-format=raw")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(stdin, 1<<20)
	gen := newContentGenerator(opts)
	r.writeCommitHeader(w, 1, opts.Branch, from, "Add the generated tree")
	for i := range opts.Files {
		writeEntry(w, Entry{Path: generatedPath(i), Content: gen.file(i)})
	}
	io.WriteString(w, "\n")
	edits := rand.New(rand.NewPCG(opts.Seed, 0xed17))
	changed := map[int][]byte{}
	i := 0
	for c := 1; c < opts.Commits; c++ {
		if (c-1)%editRun == 0 {
			i = edits.IntN(opts.Files)
		}
		data, ok := changed[i]
		if !ok {
			data = gen.file(i)
		}
		data = gen.edit(data, edits)
		changed[i] = data
		r.writeCommit(w, c+1, opts.Branch, "", fmt.Sprintf("Change %s (%d)", generatedPath(i), c),
			[]Entry{{Path: generatedPath(i), Content: data}})
	}
	werr := w.Flush()
	if cerr := stdin.Close(); werr == nil {
		werr = cerr
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("git fast-import failed: %w: %s", err, stderr.String())
	}
	if werr != nil {
		return "", werr
	}
	// --window=0: keep fast-import's deltas, look for no others.
	if _, err := r.Git("repack", "-a", "-d", "-q", "--window=0", "--write-bitmap-index"); err != nil {
		return "", err
	}
	return r.RevParse("refs/heads/" + opts.Branch)
}

func generatedPath(i int) string {
	return fmt.Sprintf("pkg%03d/file%05d.go", i/100, i)
}

// contentGenerator makes the files of a generated history. File i's first
// version depends only on the options and i.
type contentGenerator struct {
	opts  GenerateOptions
	words []string
}

func newContentGenerator(opts GenerateOptions) *contentGenerator {
	g := &contentGenerator{opts: opts}
	if opts.Content == Text {
		rng := rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15))
		g.words = make([]string, 2048)
		const letters = "abcdefghijklmnopqrstuvwxyz"
		for i := range g.words {
			b := make([]byte, 2+rng.IntN(9))
			for j := range b {
				b[j] = letters[rng.IntN(len(letters))]
			}
			g.words[i] = string(b)
		}
	}
	return g
}

// file returns the first version of file i.
func (g *contentGenerator) file(i int) []byte {
	rng := rand.New(rand.NewPCG(g.opts.Seed, uint64(i)))
	if g.opts.Content == Random {
		var seed [32]byte
		binary.LittleEndian.PutUint64(seed[:], rng.Uint64())
		binary.LittleEndian.PutUint64(seed[8:], rng.Uint64())
		data := make([]byte, g.opts.FileSize)
		rand.NewChaCha8(seed).Read(data)
		return data
	}
	text := g.text(rng)
	data := make([]byte, 0, g.opts.FileSize+80)
	for len(data) < g.opts.FileSize {
		data = text.line(data)
	}
	return data
}

// edit returns data with one line (Text) or 64 bytes (Random) at a place
// chosen by rng replaced.
func (g *contentGenerator) edit(data []byte, rng *rand.Rand) []byte {
	at := rng.IntN(len(data))
	if g.opts.Content == Random {
		for j := at; j < min(at+64, len(data)); j++ {
			data[j] = byte(rng.Uint32())
		}
		return data
	}
	start := bytes.LastIndexByte(data[:at], '\n') + 1
	end := len(data)
	if n := bytes.IndexByte(data[at:], '\n'); n >= 0 {
		end = at + n + 1
	}
	out := g.text(rng).line(append([]byte(nil), data[:start]...))
	return append(out, data[end:]...)
}

func (g *contentGenerator) text(rng *rand.Rand) textSource {
	// Word frequencies follow Zipf's law, as in source code and prose.
	return textSource{rng: rng, zipf: rand.NewZipf(rng, 1.2, 1, uint64(len(g.words)-1)), words: g.words}
}

// textSource makes lines of source-like text from a fixed vocabulary, so
// that the content compresses about as well as real source code does.
type textSource struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	words []string
}

// line appends one line of about 60 characters, ending in a newline, to b.
func (t textSource) line(b []byte) []byte {
	b = append(b, '\t')
	for n := 1; n < 60; {
		w := t.words[t.zipf.Uint64()]
		b = append(b, w...)
		b = append(b, " (.,=)"[t.rng.IntN(6)])
		n += len(w) + 1
	}
	return append(b, '\n')
}

// cleanEnv is the environment of every git process of this package: no
// system or global config, no inherited GIT_* variable.
func cleanEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.TempDir(),
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
	}
}

func gitCommand(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	return cmd
}

// runGit runs git with args in dir, feeding it stdin, and returns its trimmed
// standard output; a failure carries git's standard error.
func runGit(dir string, stdin io.Reader, args ...string) (string, error) {
	cmd := gitCommand(dir, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s failed: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}
