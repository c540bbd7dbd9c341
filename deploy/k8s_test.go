package deploy_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The Kubernetes types below model only the fields the checks read.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type deployment struct {
	Kind     string     `yaml:"kind"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Replicas int `yaml:"replicas"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int            `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               securityContext `yaml:"securityContext"`
	InitContainers                []container     `yaml:"initContainers"`
	Containers                    []container     `yaml:"containers"`
}

type securityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env             []envVar        `yaml:"env"`
	ReadinessProbe  *probe          `yaml:"readinessProbe"`
	LivenessProbe   *probe          `yaml:"livenessProbe"`
	Lifecycle       *lifecycle      `yaml:"lifecycle"`
	SecurityContext securityContext `yaml:"securityContext"`
}

type envVar struct {
	Name      string     `yaml:"name"`
	Value     string     `yaml:"value"`
	ValueFrom *envSource `yaml:"valueFrom"`
}

type envSource struct {
	FieldRef     *fieldRef `yaml:"fieldRef"`
	SecretKeyRef *struct {
		Name string `yaml:"name"`
		Key  string `yaml:"key"`
	} `yaml:"secretKeyRef"`
}

type fieldRef struct {
	FieldPath string `yaml:"fieldPath"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		// Port is a port name or number, as Kubernetes' IntOrString.
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type lifecycle struct {
	PreStop *struct {
		Sleep *struct {
			Seconds int `yaml:"seconds"`
		} `yaml:"sleep"`
	} `yaml:"preStop"`
}

type service struct {
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type configMap struct {
	Metadata objectMeta        `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type secret struct {
	Metadata   objectMeta        `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
}

type kustomization struct {
	Resources []string `yaml:"resources"`
}

// imlite returns the Deployment's imlite container. For a Deployment without
// one it returns an empty container, which every check then reports.
func (f *fixture) imlite() *container {
	cs := f.deployment.Spec.Template.Spec.Containers
	for i := range cs {
		if cs[i].Name == "imlite" {
			return &cs[i]
		}
	}
	return &container{Name: "imlite (missing)"}
}

// containerPort resolves a probe or Service port, given by name or number,
// to a container port number of c, or returns -1.
func containerPort(c *container, port string) int {
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return -1
}

func setEnv(c *container, v envVar) {
	for i := range c.Env {
		if c.Env[i].Name == v.Name {
			c.Env[i] = v
			return
		}
	}
	c.Env = append(c.Env, v)
}

func checkConfigMap(f *fixture) []string {
	cfg, err := f.k8sConfig()
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if !cfg.Distributed() {
		problems = append(problems, "ConfigMap websocket.yaml selects embedded mode; the Deployment runs several pods, which need distributed mode")
	}
	if len(cfg.Ignored) > 0 {
		problems = append(problems, fmt.Sprintf("ConfigMap websocket.yaml has keys imlite ignores: %v", cfg.Ignored))
	}
	return problems
}

func checkDeploymentPorts(f *fixture) []string {
	cfg, err := f.k8sConfig()
	if err != nil {
		return []string{err.Error()}
	}
	c := f.imlite()
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(configPorts(cfg))) {
		want := configPorts(cfg)[name]
		got := containerPort(c, name)
		switch {
		case got == -1:
			problems = append(problems, fmt.Sprintf("Deployment: no container port named %s (config port %d)", name, want))
		case got != want:
			problems = append(problems, fmt.Sprintf("Deployment: container port %s is %d, want %d from the ConfigMap", name, got, want))
		}
	}
	if f.deployment.Spec.Replicas < 2 {
		problems = append(problems, fmt.Sprintf("Deployment: replicas is %d, want at least 2", f.deployment.Spec.Replicas))
	}
	return problems
}

func checkServicePorts(f *fixture) []string {
	c := f.imlite()
	var problems []string
	labels := f.deployment.Spec.Template.Metadata.Labels
	for k, v := range f.service.Spec.Selector {
		if labels[k] != v {
			problems = append(problems, fmt.Sprintf("Service: selector %s=%s does not match the pod labels %v", k, v, labels))
		}
	}
	named := map[string]bool{}
	for _, p := range f.service.Spec.Ports {
		named[p.Name] = true
		target := containerPort(c, p.TargetPort)
		if target == -1 {
			problems = append(problems, fmt.Sprintf("Service: port %s targetPort %q matches no container port", p.Name, p.TargetPort))
			continue
		}
		if p.Port != target {
			problems = append(problems, fmt.Sprintf("Service port %s is %d, want %d, the container port it targets, so clients use the documented port", p.Name, p.Port, target))
		}
	}
	for _, name := range []string{"grpc", "http", "websocket"} {
		if !named[name] {
			problems = append(problems, fmt.Sprintf("Service: no port named %s", name))
		}
	}
	return problems
}

func checkProbes(f *fixture) []string {
	cfg, err := f.k8sConfig()
	if err != nil {
		return []string{err.Error()}
	}
	c := f.imlite()
	var problems []string
	for _, pr := range []struct {
		name string
		p    *probe
		path string
	}{
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			problems = append(problems, fmt.Sprintf("container %s has no %s with httpGet", c.Name, pr.name))
			continue
		}
		if pr.p.HTTPGet.Path != pr.path {
			problems = append(problems, fmt.Sprintf("%s path is %q, want %q", pr.name, pr.p.HTTPGet.Path, pr.path))
		}
		if got := containerPort(c, pr.p.HTTPGet.Port); got != cfg.Http.Port {
			problems = append(problems, fmt.Sprintf("%s port %s is %d, want Http.Port %d", pr.name, pr.p.HTTPGet.Port, got, cfg.Http.Port))
		}
	}
	return problems
}

func checkPodEnv(f *fixture) []string {
	c := f.imlite()
	want := map[string]string{"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		i := slices.IndexFunc(c.Env, func(e envVar) bool { return e.Name == name })
		if i < 0 {
			problems = append(problems, fmt.Sprintf("container %s does not set %s", c.Name, name))
			continue
		}
		e := c.Env[i]
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != want[name] {
			problems = append(problems, fmt.Sprintf("%s does not come from fieldRef %s (downward API)", name, want[name]))
		}
	}
	return problems
}

func checkGracePeriod(f *fixture) []string {
	cfg, err := f.k8sConfig()
	if err != nil {
		return []string{err.Error()}
	}
	c := f.imlite()
	var problems []string
	preStop := 0
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		problems = append(problems, fmt.Sprintf("container %s has no preStop hook; without one, pods get SIGTERM while still listed as Service endpoints", c.Name))
	} else if c.Lifecycle.PreStop.Sleep != nil {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	grace := f.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil {
		return append(problems, "terminationGracePeriodSeconds is unset; the default 30s must be stated and checked against Shutdown.Timeout")
	}
	need := cfg.Shutdown.Timeout.Std() + time.Duration(preStop)*time.Second
	if time.Duration(*grace)*time.Second <= need {
		problems = append(problems, fmt.Sprintf("terminationGracePeriodSeconds %d must exceed the preStop sleep %ds plus Shutdown.Timeout %v", *grace, preStop, cfg.Shutdown.Timeout.Std()))
	}
	return problems
}

func checkPodSecurity(f *fixture) []string {
	spec := f.deployment.Spec.Template.Spec
	var problems []string
	if !isTrue(spec.SecurityContext.RunAsNonRoot) {
		problems = append(problems, "pod securityContext: runAsNonRoot is not true")
	}
	if u := spec.SecurityContext.RunAsUser; u != nil && *u == 0 {
		problems = append(problems, "pod securityContext: runAsUser is 0 (root)")
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		if !isTrue(sc.ReadOnlyRootFilesystem) {
			problems = append(problems, c.Name+": readOnlyRootFilesystem is not true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			problems = append(problems, c.Name+": allowPrivilegeEscalation is not false")
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			problems = append(problems, c.Name+": runAsNonRoot is false")
		}
	}
	return problems
}

func isTrue(b *bool) bool { return b != nil && *b }

// checkSecretWiring follows the token secret from the Secret through the
// init container into the ConfigMap's placeholder.
func checkSecretWiring(f *fixture) []string {
	var problems []string
	if !strings.Contains(f.configMap.Data["websocket.yaml"], secretPlaceholder) {
		problems = append(problems, fmt.Sprintf("ConfigMap websocket.yaml has no placeholder %s for Auth.AccessSecret", secretPlaceholder))
	}
	inits := f.deployment.Spec.Template.Spec.InitContainers
	if len(inits) == 0 {
		return append(problems, "Deployment has no init container to replace the secret placeholder")
	}
	init := inits[0]
	if !strings.Contains(strings.Join(init.Args, "\n"), secretPlaceholder) {
		problems = append(problems, fmt.Sprintf("init container %s does not replace %s", init.Name, secretPlaceholder))
	}
	i := slices.IndexFunc(init.Env, func(e envVar) bool { return e.Name == "IMLITE_ACCESS_SECRET" })
	if i < 0 || init.Env[i].ValueFrom == nil || init.Env[i].ValueFrom.SecretKeyRef == nil {
		return append(problems, fmt.Sprintf("init container %s does not take IMLITE_ACCESS_SECRET from a Secret", init.Name))
	}
	ref := init.Env[i].ValueFrom.SecretKeyRef
	if _, ok := f.secret.StringData[ref.Key]; ref.Name != f.secret.Metadata.Name || !ok {
		problems = append(problems, fmt.Sprintf("init container takes IMLITE_ACCESS_SECRET from %s/%s, but the example Secret is %s with keys %v",
			ref.Name, ref.Key, f.secret.Metadata.Name, slices.Sorted(maps.Keys(f.secret.StringData))))
	}
	return problems
}

func checkKustomization(f *fixture) []string {
	var problems []string
	for _, name := range f.k8sFiles {
		if !slices.Contains(f.kustomization.Resources, name) {
			problems = append(problems, fmt.Sprintf("kustomization.yaml: %s is not listed in resources", name))
		}
	}
	for _, r := range f.kustomization.Resources {
		if !slices.Contains(f.k8sFiles, r) {
			problems = append(problems, fmt.Sprintf("kustomization.yaml lists %s, which does not exist in k8s/", r))
		}
	}
	return problems
}
