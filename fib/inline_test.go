package fib

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// hotHelper is a helper of the packet path that must be inlined: its
// name as the compiler's -m output spells it (without the package path;
// a generic one by its shape instantiation, which holds the body: the
// instantiations by type are wrappers that always inline), why, and the
// hot functions that must have each call to it inlined (by their
// declarations: "lookup" for a function, "Snapshot.lookup" for a method).
type hotHelper struct {
	name  string
	why   string
	sites []string
}

// hotHelpers are the helpers written out for the inliner, or so small
// that the lookups were measured with them inlined. A Go upgrade that
// changes the inliner's costs can push one over the budget of 80
// silently; TestHotHelpersInline then names it. Costs are those of Go
// 1.26 (go build -gcflags=-m=2 ./fib/).
var hotHelpers = []hotHelper{
	{"findOuter", "the region filter, once per address in every lookup (twice a frame: source and destination); lastAtMost is written out in it to keep it under the budget (cost 77 of 80)",
		[]string{"Snapshot.lookup", "Snapshot.sourceAllowed", "batchState.load"}},
	{"region", "the region of an address, beside every findOuter",
		[]string{"Snapshot.lookup", "Snapshot.sourceAllowed", "batchState.load"}},
	{"split128", "the address as two words, in the single lookups",
		[]string{"Snapshot.Lookup", "Snapshot.SourceAllowed"}},
	{"blockID", "a prefix's block and slot, per (address, length) with dense blocks; its shifts are masked so that the inlined code has no compare-and-select for longer shifts",
		[]string{"Snapshot.lookup", "batchState.begin"}},
	{"blockOf", "blockID with the block's key, for the single source check",
		[]string{"Snapshot.sourceAllowed"}},
	{"finder", "a length's runs of blocks once per batch; the one-run compare that follows is written out in begin because a method doing it does not inline",
		[]string{"batchState.begin"}},
	{"hash", "the hash of every hashed probe",
		[]string{"Snapshot.lookup", "Snapshot.sourceAllowed", "batchState.hashProbe"}},
	{"tag", "a probe's tag byte",
		[]string{"Snapshot.lookup", "Snapshot.sourceAllowed", "findRoute", "findSource", "batchState.readWords"}},
	{"home", "a probe's home group",
		[]string{"Snapshot.lookup", "Snapshot.sourceAllowed", "findRoute", "findSource", "batchState.readWords"}},
	{"ctrlWord", "a bucket group's control bytes as one word",
		[]string{"Snapshot.lookup", "Snapshot.sourceAllowed", "findRoute", "findSource", "batchState.readWords"}},
	{"matchTag", "the tag compare of a group, several times a probe",
		[]string{"Snapshot.lookup", "Snapshot.sourceAllowed", "findRoute", "findSource", "batchState.readWords"}},
	{"(*word[go.shape.*routeEnt]).cell", "a dense route probe's cell (a popcount and an add), for nearly every address of a busy pool",
		[]string{"batchState.readWords"}},
	{"(*word[go.shape.*srcEnt]).holds", "a dense source check, all that it reads",
		[]string{"batchState.readWords"}},
	{"(*block[go.shape.*srcEnt]).holds", "the single source check in a dense block",
		[]string{"Snapshot.sourceAllowed"}},
	{"(*block[go.shape.*routeEnt]).get", "the single route lookup in a dense block (cost 76 of 80)",
		[]string{"Snapshot.lookup"}},
	{"(*batchState[go.shape.*routeEnt]).found", "records a hashed match, per probe",
		[]string{"batchState.readWords", "batchState.compare"}},
	{"(*batchState[go.shape.*srcEnt]).found", "records a source match, per probe (dense source checks settle in readWords)",
		[]string{"batchState.readWords", "batchState.compare"}},
	{"entryKey[go.shape.*routeEnt]", "an entry's key without the call through the generic dictionary that (*e).k() makes",
		[]string{"batchState.touchEntries"}},
	{"entryKey[go.shape.*srcEnt]", "as for routes",
		[]string{"batchState.touchEntries"}},
	{"routeOf", "&e.Route without the nil check that reads *e: LookupHops gives a route it has not read",
		[]string{"Snapshot.routesFound"}},
	{"(*packedHop).unpackTo", "stores a hop field by field: a Hop copied whole from one built in parts defeats store-to-load forwarding (5-9 ns a frame)",
		[]string{"Snapshot.routesFound"}},
	{"(*Route).hopTo", "as unpackTo, for a route outside the dense blocks",
		[]string{"Snapshot.routesFound"}},
}

// modulePrefix is how the compiler qualifies the package's own names.
const modulePrefix = "github.com/pdrelay/pdrelay/fib."

// inlineLine matches the -m output lines the test reads: position, then
// "can inline X", "cannot inline X: reason" or "inlining call to X".
var inlineLine = regexp.MustCompile(`^(.+\.go):(\d+):\d+: (can inline|cannot inline|inlining call to) (.+)$`)

// TestHotHelpersInline builds the package with the compiler's inlining
// report (go build -gcflags=-m=2) and fails for each helper in
// hotHelpers that the compiler cannot inline, with its cost, or that is
// not inlined at every call in one of its hot functions.
func TestHotHelpersInline(t *testing.T) {
	if runtime.Compiler != "gc" {
		t.Skipf("the inlining report is the gc compiler's; this is %s", runtime.Compiler)
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH, so the inlining report cannot be made")
	}
	cmd := exec.Command(goCmd, "build", "-gcflags=-m=2", ".")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build -gcflags=-m=2: %v\n%s", err, out.String())
	}
	can := map[string]bool{}
	cannot := map[string]string{}
	type call struct {
		file string
		line int
	}
	calls := map[string][]call{} // helper -> positions of inlined calls
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := inlineLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		file := filepath.Base(m[1])
		line, _ := strconv.Atoi(m[2])
		rest := strings.ReplaceAll(m[4], modulePrefix, "")
		switch m[3] {
		case "can inline":
			name, _, _ := strings.Cut(rest, " with cost ")
			can[name] = true
		case "cannot inline":
			name, reason, _ := strings.Cut(rest, ": ")
			cannot[name] = reason
		case "inlining call to":
			calls[rest] = append(calls[rest], call{file, line})
		}
	}
	if len(can) == 0 {
		t.Fatalf("no inlining report in the output of go build -gcflags=-m=2:\n%s", out.String())
	}
	funcs, callsIn := parseFuncs(t)
	for _, h := range hotHelpers {
		switch {
		case can[h.name]:
		case cannot[h.name] != "":
			t.Errorf("%s is no longer inlinable (%s); it must inline: %s", h.name, cannot[h.name], h.why)
			continue
		default:
			t.Errorf("%s is not in the inlining report: renamed or removed? update hotHelpers", h.name)
			continue
		}
		base := baseName(h.name)
		for _, site := range h.sites {
			fn, ok := funcs[site]
			if !ok {
				t.Errorf("%s: hot site %s is not declared in the package: update hotHelpers", h.name, site)
				continue
			}
			// Every call to the helper in the site's body must be
			// inlined: compare the lines calling it with the lines of
			// the compiler's inlined calls.
			want := callsIn(fn, base)
			if len(want) == 0 {
				t.Errorf("%s: %s does not call it (any more): update hotHelpers", h.name, site)
				continue
			}
			for _, line := range want {
				inlined := false
				for _, c := range calls[h.name] {
					inlined = inlined || c.file == fn.file && c.line == line
				}
				if !inlined {
					t.Errorf("%s is not inlined in %s at %s:%d; it must be: %s", h.name, site, fn.file, line, h.why)
				}
			}
		}
	}
}

// baseName returns the function or method name of a -m name:
// "(*word[go.shape.*routeEnt]).cell" is cell, "entryKey[...]" entryKey.
func baseName(name string) string {
	if i := strings.LastIndex(name, ")."); i >= 0 {
		name = name[i+2:]
	}
	name, _, _ = strings.Cut(name, "[")
	return name
}

// funcDecl is where a function of the package is declared.
type funcDecl struct {
	file string
	decl *ast.FuncDecl
	fset *token.FileSet
}

// parseFuncs parses the package's non-test files and returns their
// functions by name ("f" or "Recv.m"), and a function that lists the
// lines of a function's body calling a function or method of a name.
func parseFuncs(t *testing.T) (map[string]funcDecl, func(funcDecl, string) []int) {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	funcs := map[string]funcDecl{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			key := fd.Name.Name
			if fd.Recv != nil && len(fd.Recv.List) == 1 {
				key = recvName(fd.Recv.List[0].Type) + "." + key
			}
			funcs[key] = funcDecl{file: name, decl: fd, fset: fset}
		}
	}
	callsIn := func(fn funcDecl, callee string) []int {
		var lines []int
		ast.Inspect(fn.decl.Body, func(n ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			fun := c.Fun
			if ix, ok := fun.(*ast.IndexExpr); ok { // f[T](...)
				fun = ix.X
			}
			var name string
			switch f := fun.(type) {
			case *ast.Ident:
				name = f.Name
			case *ast.SelectorExpr:
				name = f.Sel.Name
			}
			if name == callee {
				lines = append(lines, fn.fset.Position(c.Lparen).Line)
			}
			return true
		})
		return lines
	}
	return funcs, callsIn
}

// recvName returns the type name of a receiver: batchState for
// *batchState[P].
func recvName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return recvName(x.X)
	case *ast.IndexExpr:
		return recvName(x.X)
	case *ast.IndexListExpr:
		return recvName(x.X)
	case *ast.Ident:
		return x.Name
	}
	return fmt.Sprintf("%T", e)
}
