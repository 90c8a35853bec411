package fib

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// A test or benchmark, perhaps of another package: dataplane.TestX.
	docTestName = regexp.MustCompile(`\b(?:([a-z]\w*)\.)?((?:Test|Benchmark)[A-Z]\w*)`)
	// A file of the package.
	docFileName = regexp.MustCompile(`\b[a-z_]+\.go\b`)
	// An identifier in mixed case (findOuter, SourcesAndHops), perhaps
	// with a field or method of it (lpmWriter.freezeDense).
	docIdent = regexp.MustCompile(`\b([a-z]+[A-Z]\w*|[A-Z][a-z0-9]+[A-Z]\w*|[A-Za-z]\w*\.[A-Za-z]\w*)\b`)
)

// TestDocNames keeps the package comment (doc.go) accurate: every test
// and benchmark it names is defined (in this package, or in the sibling
// package it qualifies them with), every file it names exists, every
// identifier in mixed case it names and every Type.member is declared
// in the package, every invariant names a test, and every file of the
// package is in it, with a row in both tables of the map if it is not
// a test.
func TestDocNames(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var comment []string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//"); ok {
			comment = append(comment, rest)
		}
	}
	if len(comment) < 100 {
		t.Fatalf("doc.go has %d comment lines: not the package comment this test reads", len(comment))
	}
	decl := declared(t, ".")
	others := map[string]map[string]bool{} // sibling package -> its declarations
	for _, line := range comment {
		for _, m := range docTestName.FindAllStringSubmatch(line, -1) {
			pkg, name := m[1], m[2]
			switch {
			case pkg == "":
				if !decl.funcs[name] {
					t.Errorf("doc.go names %s, which the package does not define", name)
				}
			default:
				if others[pkg] == nil {
					others[pkg] = declared(t, filepath.Join("..", pkg)).funcs
				}
				if !others[pkg][name] {
					t.Errorf("doc.go names %s.%s, which ../%s does not define", pkg, name, pkg)
				}
			}
		}
		for _, f := range docFileName.FindAllString(line, -1) {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("doc.go names %s, which is not a file of the package", f)
			}
		}
		for _, id := range docIdent.FindAllString(line, -1) {
			if docTestName.MatchString(id) || strings.HasSuffix(id, ".go") {
				continue
			}
			typ, member, dotted := strings.Cut(id, ".")
			switch {
			case !dotted:
				if !decl.names[id] {
					t.Errorf("doc.go names %s, which the package does not declare", id)
				}
			case decl.members[typ] != nil && !decl.members[typ][member]:
				t.Errorf("doc.go names %s, but %s has no field or method %s", id, typ, member)
			}
		}
	}
	text := strings.Join(comment, "\n")
	// Each invariant names the test that checks it.
	_, inv, ok := strings.Cut(text, "\n # Invariants\n")
	inv, _, ok2 := strings.Cut(inv, "\n # ")
	bullets := strings.Split(inv, "\n   - ")[1:]
	if !ok || !ok2 || len(bullets) < 10 {
		t.Fatalf("doc.go: no section # Invariants with its list followed by another section (%d invariants)", len(bullets))
	}
	for _, b := range bullets {
		if !docTestName.MatchString(b) {
			t.Errorf("the invariant %q names no test", strings.Join(strings.Fields(b), " "))
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f == "doc.go" {
			continue
		}
		if !strings.Contains(text, f) {
			t.Errorf("doc.go does not mention %s: give it its place in the map", f)
		}
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if n := strings.Count(text, "\n\t"+f+" "); n != 2 {
			t.Errorf("%s has %d rows in the map's tables, want 2 (its types, its tests)", f, n)
		}
	}
}

// decls is what a package declares: its functions and methods (funcs),
// every name it declares (names: those, types, variables, constants and
// fields) and each type's fields and methods (members).
type decls struct {
	funcs, names map[string]bool
	members      map[string]map[string]bool
}

// declared parses the Go files (tests included) of the package in dir.
func declared(t *testing.T, dir string) decls {
	t.Helper()
	d := decls{funcs: map[string]bool{}, names: map[string]bool{}, members: map[string]map[string]bool{}}
	member := func(typ, name string) {
		if d.members[typ] == nil {
			d.members[typ] = map[string]bool{}
		}
		d.members[typ][name] = true
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no Go files in %s", dir)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, dl := range f.Decls {
			switch dl := dl.(type) {
			case *ast.FuncDecl:
				d.funcs[dl.Name.Name], d.names[dl.Name.Name] = true, true
				if dl.Recv != nil && len(dl.Recv.List) == 1 {
					member(recvName(dl.Recv.List[0].Type), dl.Name.Name)
				}
			case *ast.GenDecl:
				for _, sp := range dl.Specs {
					switch sp := sp.(type) {
					case *ast.TypeSpec:
						d.names[sp.Name.Name] = true
						member(sp.Name.Name, "") // a type, perhaps without members
						st, ok := sp.Type.(*ast.StructType)
						if !ok {
							continue
						}
						for _, fl := range st.Fields.List {
							for _, n := range fl.Names {
								d.names[n.Name] = true
								member(sp.Name.Name, n.Name)
							}
							if len(fl.Names) == 0 { // embedded: named by its type
								member(sp.Name.Name, recvName(fl.Type))
							}
						}
					case *ast.ValueSpec:
						for _, n := range sp.Names {
							d.names[n.Name] = true
						}
					}
				}
			}
		}
	}
	return d
}
