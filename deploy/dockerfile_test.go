package deploy_test

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/imlite/imlite/server/config"
)

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	// Cmd is the instruction keyword in upper case, such as RUN.
	Cmd  string
	Args string
}

// parseDockerfile splits a Dockerfile into instructions. It follows
// backslash continuations and skips comments, which is all the checks need.
// Heredocs are not supported.
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cont := strings.HasSuffix(line, `\`)
		cur.WriteString(strings.TrimSuffix(line, `\`))
		if cont {
			cur.WriteString(" ")
			continue
		}
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// stages splits instructions at each FROM, so each stage starts with its FROM.
func stages(ins []instruction) [][]instruction {
	var out [][]instruction
	for _, in := range ins {
		if in.Cmd == "FROM" {
			out = append(out, nil)
		}
		if len(out) > 0 {
			out[len(out)-1] = append(out[len(out)-1], in)
		}
	}
	return out
}

// buildStage returns the stage whose RUN calls go build, and that RUN.
func buildStage(ins []instruction) ([]instruction, instruction, bool) {
	for _, st := range stages(ins) {
		for _, in := range st {
			if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
				return st, in, true
			}
		}
	}
	return nil, instruction{}, false
}

func checkDockerfileBuild(f *fixture) []string {
	st, run, ok := buildStage(f.dockerfile)
	if !ok {
		return []string{"Dockerfile: no RUN instruction runs go build"}
	}
	var problems []string
	cgoOff := strings.Contains(run.Args, "CGO_ENABLED=0") || slices.ContainsFunc(st, func(in instruction) bool {
		return in.Cmd == "ENV" && strings.Contains(in.Args, "CGO_ENABLED=0")
	})
	if !cgoOff {
		problems = append(problems, "Dockerfile: go build runs without CGO_ENABLED=0, so the binary may need a C library the final image lacks")
	}
	if !strings.Contains(run.Args, "-trimpath") {
		problems = append(problems, "Dockerfile: go build runs without -trimpath")
	}
	if !strings.Contains(run.Args, "./cmd/imlite") {
		problems = append(problems, "Dockerfile: go build does not build ./cmd/imlite")
	}
	return problems
}

func checkDockerfileRuntime(f *fixture) []string {
	all := stages(f.dockerfile)
	if len(all) == 0 {
		return []string{"Dockerfile: no FROM instruction"}
	}
	final := all[len(all)-1]
	var problems []string
	if strings.Contains(final[0].Args, "golang") {
		problems = append(problems, fmt.Sprintf("Dockerfile: final stage %q is the Go toolchain image; use a minimal one", final[0].Args))
	}
	problems = append(problems, checkFinalUser(final)...)
	problems = append(problems, checkExpose(final)...)
	if !slices.ContainsFunc(final, func(in instruction) bool { return in.Cmd == "HEALTHCHECK" }) {
		problems = append(problems, "Dockerfile: final stage has no HEALTHCHECK instruction; state NONE or a command that works without a shell")
	}
	if !slices.ContainsFunc(final, func(in instruction) bool { return in.Cmd == "ENTRYPOINT" && strings.Contains(in.Args, "imlite") }) {
		problems = append(problems, "Dockerfile: final stage has no ENTRYPOINT running imlite")
	}
	return problems
}

func checkFinalUser(final []instruction) []string {
	user := ""
	for _, in := range final {
		if in.Cmd == "USER" {
			user = in.Args
		}
	}
	if user == "" {
		return []string{"Dockerfile: final stage sets no USER, so the image runs as root"}
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "root" || name == "0" {
		return []string{fmt.Sprintf("Dockerfile: final stage runs as %q; use a non-root user such as 65532", user)}
	}
	return nil
}

// checkExpose checks that the final stage exposes the default ports, which
// the image serves when run without -f.
func checkExpose(final []instruction) []string {
	exposed := map[string]bool{}
	for _, in := range final {
		if in.Cmd == "EXPOSE" {
			for _, p := range strings.Fields(in.Args) {
				p, _, _ = strings.Cut(p, "/")
				exposed[p] = true
			}
		}
	}
	ports := configPorts(config.Default())
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(ports)) {
		if p := strconv.Itoa(ports[name]); !exposed[p] {
			problems = append(problems, fmt.Sprintf("Dockerfile: EXPOSE lacks %s port %s", name, p))
		}
	}
	return problems
}

var (
	goDirective = regexp.MustCompile(`(?m)^go (\d+\.\d+)`)
	argDefault  = regexp.MustCompile(`^(\w+)=(\S+)$`)
)

// checkDockerfileGoVersion checks that the builder image is the Go release
// that go.mod requires. With GOTOOLCHAIN=local an older image fails the
// build, and a newer one is untested.
func checkDockerfileGoVersion(f *fixture) []string {
	m := goDirective.FindStringSubmatch(f.goMod)
	if m == nil {
		return []string{"go.mod has no go directive"}
	}
	st, _, ok := buildStage(f.dockerfile)
	if !ok {
		return []string{"Dockerfile: no RUN instruction runs go build"}
	}
	image, _, _ := strings.Cut(st[0].Args, " ")
	image = expandArgs(f.dockerfile, image)
	if !strings.HasPrefix(image, "golang:"+m[1]) {
		return []string{fmt.Sprintf("Dockerfile: Go image %s is not Go %s from go.mod", image, m[1])}
	}
	return nil
}

// expandArgs replaces ${NAME} with the default of ARG NAME=value.
func expandArgs(ins []instruction, s string) string {
	for _, in := range ins {
		if in.Cmd != "ARG" {
			continue
		}
		if m := argDefault.FindStringSubmatch(in.Args); m != nil {
			s = strings.ReplaceAll(s, "${"+m[1]+"}", m[2])
		}
	}
	return s
}

func replaceInDockerfile(f *fixture, old, replacement string) {
	for i := range f.dockerfile {
		f.dockerfile[i].Args = strings.ReplaceAll(f.dockerfile[i].Args, old, replacement)
	}
}

func removeFromDockerfile(f *fixture, cmd string) {
	f.dockerfile = slices.DeleteFunc(f.dockerfile, func(in instruction) bool { return in.Cmd == cmd })
}
