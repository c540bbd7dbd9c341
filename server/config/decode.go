package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// ignoredKeys are keys of go-zero's service and RPC server configuration,
// which IM-Lite-Server files may carry. imlite has no use for them.
var ignoredKeys = map[string]bool{
	"Etcd": true, "Timeout": true, "CpuThreshold": true, "Health": true,
	"Middlewares": true, "StrictControl": true, "Prometheus": true,
	"DevServer": true, "MetricsUrl": true,
	"Log.Stat": true, "Log.StackCooldownMillis": true, "Log.MaxContentLength": true,
	"Log.Rotation": true, "Log.FileTimeFormat": true,
	"Redis.Tls": true, "Redis.Key": true,
	"Shutdown.WrapUpTime": true, "Shutdown.WaitTime": true,
}

var durationType = reflect.TypeFor[Duration]()

// decodeStrict decodes data into c, checking every key against the struct
// tags. It returns the ignored keys it met and the keys it set; errors name
// the key and line.
func decodeStrict(data []byte, c *Config) ([]string, map[string]bool, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, fmt.Errorf("invalid YAML: %w", err)
	}
	d := &decoder{set: make(map[string]bool)}
	if len(root.Content) == 0 {
		return nil, d.set, nil
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("line %d: the file must be a mapping of keys such as \"ListenOn: :30000\"", doc.Line)
	}
	d.mapping(doc, reflect.ValueOf(c).Elem(), "")
	return d.ignored, d.set, errors.Join(d.errs...)
}

type decoder struct {
	ignored []string
	set     map[string]bool
	errs    []error
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("line %d: %s: %s", n.Line, key, fmt.Sprintf(format, args...)))
}

// mapping decodes a YAML mapping into the struct v; path is the key prefix.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		full := key
		if path != "" {
			full = path + "." + key
		}
		if seen[key] {
			d.fail(k, full, "key appears twice")
			continue
		}
		seen[key] = true

		field, ok := fieldByTag(v, key)
		if !ok {
			if ignoredKeys[full] {
				d.ignored = append(d.ignored, full)
				continue
			}
			msg := "unknown key"
			if guess := suggest(v.Type(), key); guess != "" {
				msg += "; did you mean " + joinKey(path, guess) + "?"
			}
			d.fail(k, full, "%s", msg)
			continue
		}
		d.set[full] = true
		d.value(val, field, full)
	}
}

func (d *decoder) value(n *yaml.Node, field reflect.Value, key string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch {
	case field.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "want a duration such as \"5s\" or a number of seconds")
			return
		}
		dur, err := parseDuration(n.Value)
		if err != nil {
			d.fail(n, key, "%v", err)
			return
		}
		field.Set(reflect.ValueOf(dur))
	case field.Kind() == reflect.Struct:
		if n.Kind == yaml.ScalarNode && key == "Auth" && (n.Value == "true" || n.Value == "false") {
			// go-zero's RPC servers have a boolean Auth switch; imlite's
			// Auth is a section, so the switch is ignored.
			d.ignored = append(d.ignored, key)
			return
		}
		if n.Kind != yaml.MappingNode {
			d.fail(n, key, "want a section of keys, got %s", describe(n))
			return
		}
		d.mapping(n, field, key)
	default:
		if err := n.Decode(field.Addr().Interface()); err != nil {
			d.fail(n, key, "want %s, got %s", typeName(field.Type()), describe(n))
		}
	}
}

func fieldByTag(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("yaml"); tag == key && tag != "-" {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// suggest returns the key of t closest to key: one that differs in case
// only, else one within two edits, else "".
func suggest(t reflect.Type, key string) string {
	best, bestDist := "", 3
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "-" || tag == "" {
			continue
		}
		if strings.EqualFold(tag, key) {
			return tag
		}
		if d := editDistance(strings.ToLower(tag), strings.ToLower(key)); d < bestDist {
			best, bestDist = tag, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a section"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(typeName(t.Elem()), "a ") + "s"
	case reflect.Map:
		return "a mapping of strings"
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Float64:
		return "a number"
	}
	return t.String()
}
