package deploy_test

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/imlite/imlite/server/config"
)

// wantMode is the mode each etc/*.yaml example must select.
var wantMode = map[string]string{
	"websocket.yaml":   "distributed",
	"embedded.yaml":    "embedded",
	"local-pod-a.yaml": "distributed",
	"local-pod-b.yaml": "distributed",
}

// checkConfigFiles loads every etc/*.yaml with imlite's loader.
func checkConfigFiles(f *fixture) []string {
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(f.etcFiles)) {
		text := strings.ReplaceAll(f.etcFiles[name], secretPlaceholder, testSecret)
		cfg, err := config.Parse([]byte(text), noEnv)
		if err != nil {
			problems = append(problems, fmt.Sprintf("etc/%s: %v", name, err))
			continue
		}
		if len(cfg.Ignored) > 0 {
			problems = append(problems, fmt.Sprintf("etc/%s has keys imlite ignores: %v", name, cfg.Ignored))
		}
		mode := "embedded"
		if cfg.Distributed() {
			mode = "distributed"
		}
		switch want, known := wantMode[name]; {
		case !known:
			problems = append(problems, fmt.Sprintf("etc/%s is not an expected example; add it to wantMode with its mode", name))
		case mode != want:
			problems = append(problems, fmt.Sprintf("etc/%s selects %s mode, want %s", name, mode, want))
		}
	}
	return problems
}

// distributedSections are the sections that select distributed mode, which
// the embedded example leaves out.
var distributedSections = []string{"Redis", "Mongo", "Pushers", "Consumers"}

// checkEmbeddedExample checks that etc/embedded.yaml sets every key of
// embedded mode, so it documents them all.
func checkEmbeddedExample(f *fixture) []string {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(f.etcFiles["embedded.yaml"]), &root); err != nil {
		return []string{fmt.Sprintf("etc/embedded.yaml: %v", err)}
	}
	set := map[string]bool{}
	if len(root.Content) > 0 {
		collectKeys(root.Content[0], "", set)
	}
	var problems []string
	for _, key := range configKeys(reflect.TypeFor[config.Config](), "") {
		section, _, _ := strings.Cut(key, ".")
		if slices.Contains(distributedSections, section) {
			continue
		}
		if !set[key] {
			problems = append(problems, fmt.Sprintf("etc/embedded.yaml does not set %s", key))
		}
	}
	return problems
}

// collectKeys records the dotted path of every key under the mapping n.
func collectKeys(n *yaml.Node, prefix string, set map[string]bool) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := prefix + n.Content[i].Value
		set[key] = true
		collectKeys(n.Content[i+1], key+".", set)
	}
}

// configKeys lists the dotted paths of the leaf keys of the struct type t,
// from its yaml tags.
func configKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for field := range t.Fields() {
		tag := field.Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		if field.Type.Kind() == reflect.Struct {
			keys = append(keys, configKeys(field.Type, key+".")...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}
