// Package deploy_test checks the files under deploy/ against each other and
// against imlite's own configuration loader. The ports of the Dockerfile,
// the Kubernetes manifests, the Compose file and the configuration files
// must agree. The checks also cover probes, pod environment, shutdown
// bounds, security settings and the metric names of the Grafana dashboard.
// No Docker engine or cluster is needed. docker-compose and kubectl, when
// installed, validate the Compose file and the kustomization too.
//
// Each check returns a list of problems. The tests run every check on the
// files as they are and expect none, then on copies broken on purpose and
// expect the problem that names the cause.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imlite/imlite/server/config"
)

// Paths relative to this package's directory, where go test runs.
const (
	dockerfilePath    = "Dockerfile"
	composePath       = "docker-compose.yaml"
	composeConfigPath = "etc/websocket.yaml"
	k8sDir            = "k8s"
	dashboardPath     = "grafana/imlite-dashboard.json"
)

// secretPlaceholder is the text in the ConfigMap's websocket.yaml that the
// render-config init container replaces with the token secret.
const secretPlaceholder = "${IMLITE_ACCESS_SECRET}"

// testSecret is a made-up token secret of 64 hex characters.
const testSecret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// fixture holds every deploy file, parsed. Each test loads its own, so a
// test may break a copy without affecting others.
type fixture struct {
	// dockerfile is the Dockerfile's instructions in order.
	dockerfile []instruction
	// goMod is the repository's go.mod text.
	goMod string

	deployment    deployment
	service       service
	configMap     configMap
	secret        secret
	kustomization kustomization
	// k8sFiles lists the manifest files in k8s/, without kustomization.yaml.
	k8sFiles []string

	compose composeFile
	// etcFiles holds the text of each etc/*.yaml file by file name.
	etcFiles map[string]string
	// composeConfig is etc/websocket.yaml, which the Compose file mounts,
	// as imlite loads it.
	composeConfig *config.Config

	dashboard dashboard
}

func loadFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{}

	// 1. Dockerfile and go.mod.
	f.dockerfile = parseDockerfile(string(readFile(t, dockerfilePath)))
	f.goMod = string(readFile(t, "../go.mod"))

	// 2. Kubernetes manifests.
	decodeYAML(t, filepath.Join(k8sDir, "deployment.yaml"), &f.deployment)
	decodeYAML(t, filepath.Join(k8sDir, "service.yaml"), &f.service)
	decodeYAML(t, filepath.Join(k8sDir, "configmap.yaml"), &f.configMap)
	decodeYAML(t, filepath.Join(k8sDir, "secret.yaml"), &f.secret)
	decodeYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &f.kustomization)
	f.k8sFiles = manifestFiles(t)

	// 3. Configuration files, and the Compose file that mounts them.
	f.etcFiles = etcFiles(t)
	decodeYAML(t, composePath, &f.compose)
	cfg, err := config.Parse([]byte(f.etcFiles[filepath.Base(composeConfigPath)]), noEnv)
	if err != nil {
		t.Fatalf("config.Parse(%s): %v", composeConfigPath, err)
	}
	f.composeConfig = cfg

	// 4. Grafana dashboard.
	if err := json.Unmarshal(readFile(t, dashboardPath), &f.dashboard); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	return f
}

// k8sConfig loads the ConfigMap's websocket.yaml the way a pod does after
// the init container replaced the placeholder.
func (f *fixture) k8sConfig() (*config.Config, error) {
	text, ok := f.configMap.Data["websocket.yaml"]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no websocket.yaml key", f.configMap.Metadata.Name)
	}
	rendered := strings.ReplaceAll(text, secretPlaceholder, testSecret)
	cfg, err := config.Parse([]byte(rendered), noEnv)
	if err != nil {
		return nil, fmt.Errorf("ConfigMap websocket.yaml: %w", err)
	}
	return cfg, nil
}

func noEnv(string) string { return "" }

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read deploy file: %v", err)
	}
	return data
}

// decodeYAML decodes a one-document YAML file into v, which models only the
// fields the checks read.
func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}

func etcFiles(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("etc/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("list etc/*.yaml: found %d files, err %v", len(paths), err)
	}
	files := make(map[string]string, len(paths))
	for _, p := range paths {
		files[filepath.Base(p)] = string(readFile(t, p))
	}
	return files
}

func manifestFiles(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatalf("list manifests: %v", err)
	}
	var names []string
	for _, p := range paths {
		if name := filepath.Base(p); name != "kustomization.yaml" {
			names = append(names, name)
		}
	}
	return names
}

// listenPort returns the port of a host:port address, or -1.
func listenPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return n
}

// configPorts returns the three listening ports of cfg by container port name.
func configPorts(cfg *config.Config) map[string]int {
	return map[string]int{
		"grpc":      listenPort(cfg.ListenOn),
		"http":      cfg.Http.Port,
		"websocket": cfg.Websocket.Port,
	}
}

// check is one consistency rule over the deploy files.
type check func(*fixture) []string

// checks lists every rule; TestDeployFiles runs them all.
var checks = map[string]check{
	"config files load":          checkConfigFiles,
	"configmap loads":            checkConfigMap,
	"deployment ports":           checkDeploymentPorts,
	"service ports":              checkServicePorts,
	"probes":                     checkProbes,
	"pod environment":            checkPodEnv,
	"termination grace period":   checkGracePeriod,
	"pod security":               checkPodSecurity,
	"secret placeholder wiring":  checkSecretWiring,
	"kustomization resources":    checkKustomization,
	"compose imlite services":    checkComposeServices,
	"compose topics":             checkComposeTopics,
	"dashboard metrics":          checkDashboardMetrics,
	"dashboard legend labels":    checkDashboardLabels,
	"dashboard datasource":       checkDashboardDatasource,
	"dockerfile build":           checkDockerfileBuild,
	"dockerfile runtime":         checkDockerfileRuntime,
	"dockerfile matches go.mod":  checkDockerfileGoVersion,
	"embedded example sets keys": checkEmbeddedExample,
}

func TestDeployFiles(t *testing.T) {
	for _, name := range slices.Sorted(maps.Keys(checks)) {
		t.Run(name, func(t *testing.T) {
			f := loadFixture(t)
			for _, p := range checks[name](f) {
				t.Errorf("%s", p)
			}
		})
	}
}

// TestChecksCatchBrokenFiles breaks one thing at a time and expects the
// check responsible to name it, so a check that passes everything cannot
// go unnoticed.
func TestChecksCatchBrokenFiles(t *testing.T) {
	tests := []struct {
		name  string
		check check
		brk   func(*fixture)
		want  string
	}{
		{"readiness probe on healthz", checkProbes, func(f *fixture) {
			f.imlite().ReadinessProbe.HTTPGet.Path = "/healthz"
		}, `readinessProbe path is "/healthz", want "/readyz"`},
		{"liveness probe on grpc port", checkProbes, func(f *fixture) {
			f.imlite().LivenessProbe.HTTPGet.Port = "grpc"
		}, "livenessProbe port grpc is 30000, want Http.Port 8888"},
		{"readiness probe missing", checkProbes, func(f *fixture) {
			f.imlite().ReadinessProbe = nil
		}, "has no readinessProbe"},
		{"container port differs from config", checkDeploymentPorts, func(f *fixture) {
			f.imlite().Ports[portIndex(f.imlite(), "websocket")].ContainerPort = 31001
		}, "container port websocket is 31001, want 31000"},
		{"container port missing", checkDeploymentPorts, func(f *fixture) {
			f.imlite().Ports = slices.Delete(f.imlite().Ports, portIndex(f.imlite(), "websocket"), portIndex(f.imlite(), "websocket")+1)
		}, "no container port named websocket"},
		{"service port differs", checkServicePorts, func(f *fixture) {
			f.service.Spec.Ports[servicePortIndex(f, "grpc")].Port = 9090
		}, "Service port grpc is 9090, want 30000"},
		{"service target unknown", checkServicePorts, func(f *fixture) {
			f.service.Spec.Ports[servicePortIndex(f, "http")].TargetPort = "admin"
		}, `targetPort "admin" matches no container port`},
		{"service selector misses pods", checkServicePorts, func(f *fixture) {
			f.service.Spec.Selector = map[string]string{"app": "other"}
		}, "selector app=other does not match the pod labels"},
		{"POD_NAME literal", checkPodEnv, func(f *fixture) {
			setEnv(f.imlite(), envVar{Name: "POD_NAME", Value: "imlite-0"})
		}, "POD_NAME does not come from fieldRef metadata.name"},
		{"POD_IP wrong field", checkPodEnv, func(f *fixture) {
			setEnv(f.imlite(), envVar{Name: "POD_IP", ValueFrom: &envSource{FieldRef: &fieldRef{FieldPath: "status.hostIP"}}})
		}, "POD_IP does not come from fieldRef status.podIP"},
		{"grace period equals shutdown timeout", checkGracePeriod, func(f *fixture) {
			f.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(20)
		}, "terminationGracePeriodSeconds 20 must exceed"},
		{"grace period unset", checkGracePeriod, func(f *fixture) {
			f.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = nil
		}, "terminationGracePeriodSeconds is unset"},
		{"preStop missing", checkGracePeriod, func(f *fixture) {
			f.imlite().Lifecycle = nil
		}, "no preStop hook"},
		{"run as root", checkPodSecurity, func(f *fixture) {
			f.deployment.Spec.Template.Spec.SecurityContext.RunAsNonRoot = ptr(false)
			f.deployment.Spec.Template.Spec.SecurityContext.RunAsUser = ptr(0)
		}, "runAsNonRoot is not true"},
		{"writable root filesystem", checkPodSecurity, func(f *fixture) {
			f.imlite().SecurityContext.ReadOnlyRootFilesystem = ptr(false)
		}, "imlite: readOnlyRootFilesystem is not true"},
		{"configmap missing file", checkConfigMap, func(f *fixture) {
			delete(f.configMap.Data, "websocket.yaml")
		}, "has no websocket.yaml key"},
		{"configmap invalid key", checkConfigMap, func(f *fixture) {
			f.configMap.Data["websocket.yaml"] += "\nWebsocket2:\n  Port: 1\n"
		}, "Websocket2: unknown key"},
		{"configmap embedded mode", checkConfigMap, func(f *fixture) {
			f.configMap.Data["websocket.yaml"] = "Name: imlite\n"
		}, "selects embedded mode"},
		{"placeholder not in configmap", checkSecretWiring, func(f *fixture) {
			f.configMap.Data["websocket.yaml"] = strings.ReplaceAll(f.configMap.Data["websocket.yaml"], secretPlaceholder, testSecret)
		}, "has no placeholder"},
		{"init container reads other secret", checkSecretWiring, func(f *fixture) {
			f.deployment.Spec.Template.Spec.InitContainers[0].Env[0].ValueFrom.SecretKeyRef.Name = "other"
		}, "takes IMLITE_ACCESS_SECRET from other/access-secret"},
		{"kustomization misses file", checkKustomization, func(f *fixture) {
			f.kustomization.Resources = f.kustomization.Resources[1:]
		}, "configmap.yaml is not listed"},
		{"kustomization lists missing file", checkKustomization, func(f *fixture) {
			f.kustomization.Resources = append(f.kustomization.Resources, "ingress.yaml")
		}, "lists ingress.yaml, which does not exist"},
		{"compose POD_NAME missing", checkComposeServices, func(f *fixture) {
			delete(f.compose.Services["imlite-2"].Environment, "POD_NAME")
		}, "imlite-2: POD_NAME is \"\", want \"imlite-2\""},
		{"compose config not mounted", checkComposeServices, func(f *fixture) {
			f.compose.Services["imlite-1"].Volumes = nil
		}, "imlite-1: no volume mounts ./etc on /etc/imlite"},
		{"compose short stop grace", checkComposeServices, func(f *fixture) {
			f.compose.Services["imlite-1"].StopGracePeriod = "10s"
		}, "stop_grace_period 10s must exceed Shutdown.Timeout 20s"},
		{"compose published port wrong", checkComposeServices, func(f *fixture) {
			replaceString(f.compose.Services["imlite-1"].Ports, "127.0.0.1:8888:8888", "127.0.0.1:8080:8080")
		}, "publishes no port for http 8888"},
		{"compose no kafka dependency", checkComposeServices, func(f *fixture) {
			delete(f.compose.Services["imlite-1"].DependsOn, "kafka")
		}, "imlite-1: depends_on kafka is \"\", want service_healthy"},
		{"compose topic partitions differ", checkComposeTopics, func(f *fixture) {
			f.composeConfig.Pushers.Msg.Partition = 3
		}, "kafka-init creates im_lite_sendmsg_v1 with 8 partitions, but Pushers.Msg.Partition is 3"},
		{"dashboard unknown metric", checkDashboardMetrics, func(f *fixture) {
			panelUsing(f, "imlite_ws_connections").Targets[0].Expr = "sum(imlite_connections_total)"
		}, "imlite_connections_total is not an imlite metric"},
		{"dashboard foreign metric", checkDashboardMetrics, func(f *fixture) {
			panelUsing(f, "imlite_ws_connections").Targets[0].Expr = "sum(up)"
		}, "up is not an imlite metric"},
		{"dashboard misses metric", checkDashboardMetrics, func(f *fixture) {
			dropPanelsUsing(f, "imlite_kicks_total")
		}, "no panel shows imlite_kicks_total"},
		{"dashboard unknown label", checkDashboardLabels, func(f *fixture) {
			p := panelUsing(f, "imlite_ws_disconnects_total")
			p.Targets[0].LegendFormat = "{{reason}}"
		}, "label reason is not a label of"},
		{"dashboard fixed datasource", checkDashboardDatasource, func(f *fixture) {
			panelUsing(f, "imlite_ws_connections").Targets[0].Datasource = map[string]any{"type": "prometheus", "uid": "abc"}
		}, `uses datasource uid "abc", want "${datasource}"`},
		{"dockerfile cgo", checkDockerfileBuild, func(f *fixture) {
			replaceInDockerfile(f, "CGO_ENABLED=0", "CGO_ENABLED=1")
		}, "go build runs without CGO_ENABLED=0"},
		{"dockerfile trimpath", checkDockerfileBuild, func(f *fixture) {
			replaceInDockerfile(f, "-trimpath", "")
		}, "go build runs without -trimpath"},
		{"dockerfile root user", checkDockerfileRuntime, func(f *fixture) {
			replaceInDockerfile(f, "65532:65532", "root")
		}, `final stage runs as "root"`},
		{"dockerfile no user", checkDockerfileRuntime, func(f *fixture) {
			removeFromDockerfile(f, "USER")
		}, "final stage sets no USER"},
		{"dockerfile port missing", checkDockerfileRuntime, func(f *fixture) {
			replaceInDockerfile(f, "30000 8888 31000", "30000 8888")
		}, "EXPOSE lacks websocket port 31000"},
		{"dockerfile old go", checkDockerfileGoVersion, func(f *fixture) {
			replaceInDockerfile(f, "golang:1.26", "golang:1.24")
		}, "Go image golang:1.24 is not Go 1.26"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := loadFixture(t)
			tt.brk(f)
			got := tt.check(f)
			if !containsProblem(got, tt.want) {
				t.Errorf("problems = %q\nwant one containing %q", got, tt.want)
			}
		})
	}
}

func containsProblem(problems []string, want string) bool {
	return slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, want) })
}

func ptr[T any](v T) *T { return &v }

// portIndex returns the index of the container port called name, or -1.
func portIndex(c *container, name string) int {
	for i, p := range c.Ports {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// servicePortIndex returns the index of the Service port called name, or -1.
func servicePortIndex(f *fixture, name string) int {
	for i, p := range f.service.Spec.Ports {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// replaceString replaces the element old of list with replacement.
func replaceString(list []string, old, replacement string) {
	if i := slices.Index(list, old); i >= 0 {
		list[i] = replacement
	}
}

// TestComposeConfigValidates runs `docker-compose config -q`, which checks
// the file against the Compose schema without a Docker engine.
func TestComposeConfigValidates(t *testing.T) {
	bin := requireTool(t, "docker-compose", "the Debian package docker-compose")
	out := runTool(t, bin, "-f", composePath, "config", "-q")
	if len(bytes.TrimSpace(out)) > 0 {
		t.Logf("docker-compose output:\n%s", out)
	}
}

// TestKustomizationBuilds renders the kustomization with kubectl's built-in
// kustomize, which reads only local files.
func TestKustomizationBuilds(t *testing.T) {
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skipf("kubectl not found in PATH (%v); the kustomization is checked by TestDeployFiles only", err)
	}
	out := runTool(t, bin, "kustomize", k8sDir)
	for _, kind := range []string{"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"} {
		if !bytes.Contains(out, []byte("kind: "+kind+"\n")) {
			t.Errorf("kubectl kustomize output has no %s", kind)
		}
	}
}

// requireTool returns the path of name, skipping the test when it is
// missing, or failing it when IMLITE_REQUIRE_BACKENDS=1 demands the tool.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	if os.Getenv("IMLITE_REQUIRE_BACKENDS") == "1" {
		t.Fatalf("%s not found in PATH (%v) and IMLITE_REQUIRE_BACKENDS=1 requires it; install %s", name, err, pkg)
	}
	t.Skipf("%s not found in PATH (%v); install %s to run this test", name, err, pkg)
	return ""
}

// runTool runs a validator with a deadline and fails the test on a
// non-zero exit, with the tool's output.
func runTool(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}
