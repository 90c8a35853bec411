package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// shapeChecker walks the YAML tree beside the Go type it will be decoded
// into and reports, by key path, every unknown or repeated key and every
// value of the wrong kind. yaml.v3's own errors name only a line and a Go
// type; the operator needs the key.
type shapeChecker struct {
	errs *errList
	// budget bounds the nodes visited, as aliases can make a small
	// document a large tree.
	budget int
}

// maxNodes is far more than any real config holds.
const maxNodes = 1 << 16

func checkShape(n *yaml.Node, t reflect.Type, path string, errs *errList) {
	c := &shapeChecker{errs: errs, budget: maxNodes}
	c.check(n, t, path)
}

func (c *shapeChecker) check(n *yaml.Node, t reflect.Type, path string) {
	errs := c.errs
	if c.budget--; c.budget < 0 {
		if c.budget == -1 {
			errs.add(path, "the document has more than %d values (counting aliases); this is not a config", maxNodes)
		}
		return
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value: the key's default
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			errs.add(path, "expected a mapping of keys, got %s", describe(n))
			return
		}
		c.checkMapping(n, t, path, map[string]int{})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			errs.add(path, "expected a list, got %s", describe(n))
			return
		}
		for i, e := range n.Content {
			c.check(e, t.Elem(), path+"["+strconv.Itoa(i)+"]")
		}
	default:
		if n.Kind != yaml.ScalarNode {
			errs.add(path, "expected a single value, got %s", describe(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			errs.add(path, "%q is not %s", n.Value, kindName(t))
		}
	}
}

// checkMapping checks the keys of one mapping; seen maps each key given
// explicitly to its line, to refuse repeats.
func (c *shapeChecker) checkMapping(n *yaml.Node, t reflect.Type, path string, seen map[string]int) {
	errs := c.errs
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" { // <<: *anchor
			for v.Kind == yaml.AliasNode && v.Alias != nil {
				v = v.Alias
			}
			merged := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				merged = v.Content
			}
			for _, m := range merged {
				for m.Kind == yaml.AliasNode && m.Alias != nil {
					m = m.Alias
				}
				if m.Kind != yaml.MappingNode {
					errs.add(join(path, "<<"), "expected a mapping to merge, got %s", describe(m))
					continue
				}
				// Merged keys may be overridden: they do not count as repeats.
				c.checkMapping(m, t, path, map[string]int{})
			}
			continue
		}
		key := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			errs.add(path, "a key must be a single word, got %s", describe(k))
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			if to, moved := movedKeys[key]; moved {
				errs.add(key, "this key moved: it is now %s", to)
				continue
			}
			errs.add(key, "unknown key (known keys: %s)", strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			errs.add(key, "given twice (first at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		c.check(v, ft, key)
	}
}

// movedKeys are keys of earlier versions, by path, and where their
// settings live now.
var movedKeys = map[string]string{
	"release_request":              "release.message_types (request, reply)",
	"release_request.message_type": "release.message_types.request",
	"release_request.reply_type":   "release.message_types.reply",
}

// yamlFields maps the yaml key of each field of struct t to its type.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		m[name] = f.Type
	}
	return m
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.String:
		return "a string"
	}
	return fmt.Sprintf("a %s", t)
}
