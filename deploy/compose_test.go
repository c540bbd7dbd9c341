package deploy_test

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// composeFile models the parts of a Compose file that the checks read.
type composeFile struct {
	Services map[string]*composeService `yaml:"services"`
}

type composeService struct {
	Image           string                            `yaml:"image"`
	Command         []string                          `yaml:"command"`
	Environment     composeEnv                        `yaml:"environment"`
	Volumes         []string                          `yaml:"volumes"`
	Ports           []string                          `yaml:"ports"`
	StopGracePeriod string                            `yaml:"stop_grace_period"`
	DependsOn       map[string]composeDependency      `yaml:"depends_on"`
	Networks        map[string]*composeServiceNetwork `yaml:"networks"`
}

type composeDependency struct {
	Condition string `yaml:"condition"`
}

type composeServiceNetwork struct {
	IPv4Address string `yaml:"ipv4_address"`
}

// composeEnv is a service's environment, written in Compose either as a
// mapping or as a list of NAME=value strings.
type composeEnv map[string]string

// UnmarshalYAML accepts both forms of a Compose environment.
func (e *composeEnv) UnmarshalYAML(n *yaml.Node) error {
	*e = composeEnv{}
	if n.Kind == yaml.MappingNode {
		return n.Decode((*map[string]string)(e))
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return fmt.Errorf("environment: want a mapping or a list of NAME=value: %w", err)
	}
	for _, kv := range list {
		name, value, _ := strings.Cut(kv, "=")
		(*e)[name] = value
	}
	return nil
}

const (
	composeConfigMount = "/etc/imlite"
	composeConfigFile  = composeConfigMount + "/websocket.yaml"
)

// imliteServices returns the names of the Compose services that run imlite.
func (f *fixture) imliteServices() []string {
	var names []string
	for _, name := range slices.Sorted(maps.Keys(f.compose.Services)) {
		if strings.HasPrefix(name, "imlite-") {
			names = append(names, name)
		}
	}
	return names
}

func checkComposeServices(f *fixture) []string {
	names := f.imliteServices()
	if len(names) < 2 {
		return []string{fmt.Sprintf("compose: %d imlite-* services, want at least 2 to exercise distributed mode", len(names))}
	}
	var problems []string
	publishing := 0
	for _, name := range names {
		s := f.compose.Services[name]
		problems = append(problems, checkComposeService(f, name, s)...)
		if len(s.Ports) > 0 {
			publishing++
			problems = append(problems, checkPublishedPorts(f, name, s)...)
		}
	}
	if publishing == 0 {
		problems = append(problems, "compose: no imlite service publishes its ports")
	}
	return problems
}

func checkComposeService(f *fixture, name string, s *composeService) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, name+": "+fmt.Sprintf(format, args...))
	}

	// 1. Identity from the environment.
	if got := s.Environment["POD_NAME"]; got != name {
		bad("POD_NAME is %q, want %q", got, name)
	}
	podIP := s.Environment["POD_IP"]
	if podIP == "" {
		bad("POD_IP is not set")
	}
	for network, n := range s.Networks {
		if n != nil && n.IPv4Address != "" && n.IPv4Address != podIP {
			bad("POD_IP %q differs from its address %q on network %s", podIP, n.IPv4Address, network)
		}
	}

	// 2. The configuration file, mounted and passed with -f.
	if !slices.ContainsFunc(s.Volumes, func(v string) bool {
		src, dst, _ := strings.Cut(v, ":")
		dst, _, _ = strings.Cut(dst, ":")
		return src == "./etc" && dst == composeConfigMount
	}) {
		bad("no volume mounts ./etc on %s (volumes %q)", composeConfigMount, s.Volumes)
	}
	if !slices.Equal(s.Command, []string{"-f", composeConfigFile}) {
		bad("command is %q, want [-f %s]", s.Command, composeConfigFile)
	}

	// 3. Shutdown bound and start order.
	shutdown := f.composeConfig.Shutdown.Timeout.Std()
	if grace, err := time.ParseDuration(s.StopGracePeriod); err != nil || grace <= shutdown {
		bad("stop_grace_period %s must exceed Shutdown.Timeout %v, or Docker kills the drain", s.StopGracePeriod, shutdown)
	}
	for dep, cond := range map[string]string{
		"kafka": "service_healthy", "mongo": "service_healthy", "redis": "service_healthy",
		"kafka-init": "service_completed_successfully",
	} {
		if got := s.DependsOn[dep].Condition; got != cond {
			bad("depends_on %s is %q, want %s", dep, got, cond)
		}
	}
	return problems
}

// checkPublishedPorts checks that a publishing service publishes each
// configured port on the same host port.
func checkPublishedPorts(f *fixture, name string, s *composeService) []string {
	var problems []string
	ports := configPorts(f.composeConfig)
	for _, portName := range slices.Sorted(maps.Keys(ports)) {
		want := strconv.Itoa(ports[portName])
		if !slices.ContainsFunc(s.Ports, func(p string) bool {
			p, _, _ = strings.Cut(p, "/")
			parts := strings.Split(p, ":")
			return len(parts) >= 2 && parts[len(parts)-1] == want && parts[len(parts)-2] == want
		}) {
			problems = append(problems, fmt.Sprintf("%s publishes no port for %s %s as %s:%s (ports %q)", name, portName, want, want, want, s.Ports))
		}
	}
	return problems
}

var partitionsFlag = regexp.MustCompile(`--partitions\s+(\d+)`)

// checkComposeTopics checks that the kafka-init service creates both topics
// with the partition count imlite would use, so the layout does not depend
// on which of the two creates a topic first.
func checkComposeTopics(f *fixture) []string {
	init, ok := f.compose.Services["kafka-init"]
	if !ok {
		return []string{"compose: no kafka-init service creates the topics"}
	}
	script := strings.Join(init.Command, "\n")
	m := partitionsFlag.FindStringSubmatch(script)
	if m == nil {
		return []string{"kafka-init: no --partitions flag in its command"}
	}
	partitions, _ := strconv.Atoi(m[1])
	var problems []string
	for _, p := range []struct {
		key       string
		topic     string
		partition int
	}{
		{"Pushers.Msg", f.composeConfig.Pushers.Msg.Topic, f.composeConfig.Pushers.Msg.Partition},
		{"Pushers.Push", f.composeConfig.Pushers.Push.Topic, f.composeConfig.Pushers.Push.Partition},
	} {
		if !strings.Contains(script, p.topic) {
			problems = append(problems, fmt.Sprintf("kafka-init does not create %s.Topic %s", p.key, p.topic))
			continue
		}
		if partitions != p.partition {
			problems = append(problems, fmt.Sprintf("kafka-init creates %s with %d partitions, but %s.Partition is %d", p.topic, partitions, p.key, p.partition))
		}
	}
	return problems
}
