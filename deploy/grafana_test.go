package deploy_test

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// imliteMetrics are the metrics imlite exports, with their labels. The
// dashboard may use only these, and the go_* and process_* metrics of the
// standard Prometheus collectors.
var imliteMetrics = map[string][]string{
	"imlite_ws_connections":                     {"platform"},
	"imlite_ws_frames_in_total":                 nil,
	"imlite_ws_frames_out_total":                nil,
	"imlite_ws_disconnects_total":               {"code"},
	"imlite_ws_slow_consumer_disconnects_total": nil,
	"imlite_messages_accepted_total":            {"kind"},
	"imlite_messages_stored_total":              nil,
	"imlite_messages_pushed_total":              nil,
	"imlite_deliveries_total":                   nil,
	"imlite_send_to_store_seconds":              nil,
	"imlite_store_to_deliver_seconds":           nil,
	"imlite_consumer_lag":                       {"topic"},
	"imlite_kicks_total":                        nil,
	"imlite_errors_total":                       {"transport", "code"},
}

// histograms are the imlite metrics exported as Prometheus histograms,
// queried through their _bucket, _sum and _count series.
var histograms = []string{"imlite_send_to_store_seconds", "imlite_store_to_deliver_seconds"}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = []string{"instance", "job"}

// dashboard models the parts of a Grafana dashboard that the checks read.
type dashboard struct {
	Panels     []*panel `json:"panels"`
	Templating struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource map[string]any `json:"datasource"`
	Targets    []*target      `json:"targets"`
	// Panels holds the panels of a collapsed row.
	Panels []*panel `json:"panels"`
}

type target struct {
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Datasource   map[string]any `json:"datasource"`
}

type templateVar struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Query      any            `json:"query"`
	Definition string         `json:"definition"`
	Datasource map[string]any `json:"datasource"`
}

// allPanels returns the dashboard's panels, those in collapsed rows included.
func (d *dashboard) allPanels() []*panel {
	var out []*panel
	var walk func([]*panel)
	walk = func(ps []*panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	legendLabel  = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)
	labelValues  = regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,`)
)

// promKeywords are PromQL words that are neither functions nor metrics.
var promKeywords = []string{"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}

// metricNames returns the metric names a PromQL expression reads. It drops
// strings, label matchers, ranges and grouping clauses, then takes every
// remaining identifier that is not a function call or a keyword.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || slices.Contains(promKeywords, name) {
			continue
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // the exponent or suffix of a number, such as 1e3
		}
		names = append(names, name)
	}
	return names
}

// baseMetric maps a histogram series to its metric name.
func baseMetric(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(histograms, base) {
			return base
		}
	}
	return name
}

// knownMetric reports whether the dashboard may use name.
func knownMetric(name string) bool {
	if _, ok := imliteMetrics[baseMetric(name)]; ok {
		return true
	}
	return strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_")
}

func checkDashboardMetrics(f *fixture) []string {
	var problems []string
	used := map[string]bool{}
	use := func(where, name string) {
		used[baseMetric(name)] = true
		if !knownMetric(name) {
			problems = append(problems, fmt.Sprintf("%s: %s is not an imlite metric, nor a go_* or process_* one", where, name))
		}
	}
	for _, p := range f.dashboard.allPanels() {
		for _, t := range p.Targets {
			for _, name := range metricNames(t.Expr) {
				use(fmt.Sprintf("panel %q", p.Title), name)
			}
		}
	}
	for _, v := range f.dashboard.Templating.List {
		for _, m := range labelValues.FindAllStringSubmatch(v.Definition, -1) {
			use(fmt.Sprintf("variable %q", v.Name), m[1])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(imliteMetrics)) {
		if !used[name] {
			problems = append(problems, fmt.Sprintf("no panel shows %s", name))
		}
	}
	return problems
}

// checkDashboardLabels checks that legends and groupings use only labels
// that the queried metrics carry.
func checkDashboardLabels(f *fixture) []string {
	var problems []string
	for _, p := range f.dashboard.allPanels() {
		for _, t := range p.Targets {
			allowed := slices.Clone(targetLabels)
			for _, name := range metricNames(t.Expr) {
				allowed = append(allowed, imliteMetrics[baseMetric(name)]...)
				if strings.HasSuffix(name, "_bucket") {
					allowed = append(allowed, "le")
				}
			}
			var labels []string
			for _, m := range legendLabel.FindAllStringSubmatch(t.LegendFormat, -1) {
				labels = append(labels, m[1])
			}
			for _, m := range promGrouping.FindAllStringSubmatch(t.Expr, -1) {
				for _, l := range strings.Split(m[1], ",") {
					labels = append(labels, strings.TrimSpace(l))
				}
			}
			for _, l := range labels {
				if !slices.Contains(allowed, l) {
					problems = append(problems, fmt.Sprintf("panel %q: label %s is not a label of %v (allowed: %v)", p.Title, l, metricNames(t.Expr), allowed))
				}
			}
		}
	}
	return problems
}

// checkDashboardDatasource checks that every query goes through the
// datasource variable, so the dashboard imports into any Grafana.
func checkDashboardDatasource(f *fixture) []string {
	const want = "${datasource}"
	var problems []string
	if !slices.ContainsFunc(f.dashboard.Templating.List, func(v templateVar) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		problems = append(problems, "dashboard has no Prometheus datasource variable named datasource")
	}
	for _, p := range f.dashboard.allPanels() {
		if len(p.Targets) == 0 {
			continue
		}
		sources := []map[string]any{p.Datasource}
		for _, t := range p.Targets {
			sources = append(sources, t.Datasource)
		}
		for _, ds := range sources {
			if uid, _ := ds["uid"].(string); uid != want {
				problems = append(problems, fmt.Sprintf("panel %q uses datasource uid %q, want %q", p.Title, uid, want))
			}
		}
	}
	return problems
}

// dropPanelsUsing removes the top-level panels that query metric.
func dropPanelsUsing(f *fixture, metric string) {
	f.dashboard.Panels = slices.DeleteFunc(f.dashboard.Panels, func(p *panel) bool {
		return slices.ContainsFunc(p.Targets, func(t *target) bool { return strings.Contains(t.Expr, metric) })
	})
}

// panelUsing returns the first panel whose first query reads metric.
func panelUsing(f *fixture, metric string) *panel {
	for _, p := range f.dashboard.allPanels() {
		if len(p.Targets) > 0 && strings.Contains(p.Targets[0].Expr, metric) {
			return p
		}
	}
	return &panel{Targets: []*target{{}}}
}
