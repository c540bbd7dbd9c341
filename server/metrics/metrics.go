// Package metrics exposes imlite's Prometheus metrics. One Metrics value
// implements the core's server.Observer and the websocket hub's
// ws.Observer, and counts errors per transport; /metrics serves them with
// the Go runtime and process collectors.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// latencyBuckets span 100 µs to about 13 s, for the pipeline latencies.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 18)

// Metrics holds every imlite metric in its own registry. Its methods are
// safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	wsConnections  *prometheus.GaugeVec
	framesIn       prometheus.Counter
	framesOut      prometheus.Counter
	disconnects    *prometheus.CounterVec
	slowConsumers  prometheus.Counter
	accepted       *prometheus.CounterVec
	stored         prometheus.Counter
	pushed         prometheus.Counter
	deliveries     prometheus.Counter
	sendToStore    prometheus.Histogram
	storeToDeliver prometheus.Histogram
	consumerLag    *prometheus.GaugeVec
	kicks          prometheus.Counter
	errors         *prometheus.CounterVec
}

// New registers the metrics and the Go and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{reg}
	return &Metrics{
		reg:           reg,
		wsConnections: f.gaugeVec("imlite_ws_connections", "Open websocket connections on this pod.", "platform"),
		framesIn:      f.counter("imlite_ws_frames_in_total", "Data frames received from websocket clients."),
		framesOut:     f.counter("imlite_ws_frames_out_total", "Frames written to websocket clients."),
		disconnects:   f.counterVec("imlite_ws_disconnects_total", "Closed websocket connections by close code (0: no close frame).", "code"),
		slowConsumers: f.counter("imlite_ws_slow_consumer_disconnects_total", "Connections closed because their send queue filled."),
		accepted:      f.counterVec("imlite_messages_accepted_total", "Messages accepted by SendMsg on this pod.", "kind"),
		stored:        f.counter("imlite_messages_stored_total", "Messages stored by this pod's store stage."),
		pushed:        f.counter("imlite_messages_pushed_total", "Messages handed to this pod's connections by the push stage."),
		deliveries:    f.counter("imlite_deliveries_total", "Pushes written to websocket connections on this pod."),
		sendToStore: f.histogram("imlite_send_to_store_seconds",
			"Time from accepting a message to storing it."),
		storeToDeliver: f.histogram("imlite_store_to_deliver_seconds",
			"Time from storing a message to writing its push to a connection, one sample per socket write."),
		consumerLag: f.gaugeVec("imlite_consumer_lag", "Records of a topic not yet handled by this pod's consumers.", "topic"),
		kicks:       f.counter("imlite_kicks_total", "KickUser calls handled by this pod."),
		errors:      f.counterVec("imlite_errors_total", "Errors returned to clients, by transport and gRPC code.", "transport", "code"),
	}
}

type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets})
	f.reg.MustRegister(h)
	return h
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Accepted counts a message SendMsg published (server.Observer).
func (m *Metrics) Accepted(msg *imlitev1.Message) {
	kind := "stored"
	if !msg.GetOptions().GetStorage() {
		kind = "transient"
	}
	m.accepted.WithLabelValues(kind).Inc()
}

// Stored counts a stored message and its send-to-store latency
// (server.Observer).
func (m *Metrics) Stored(msg *imlitev1.Message, storedAt time.Time) {
	m.stored.Inc()
	if accepted := msg.GetServerTime(); accepted > 0 {
		m.sendToStore.Observe(max(storedAt.Sub(time.UnixMilli(accepted)).Seconds(), 0))
	}
}

// Pushed counts a message the push stage handed to local connections
// (server.Observer).
func (m *Metrics) Pushed(*imlitev1.Message, int, time.Time) { m.pushed.Inc() }

// Kicked counts a KickUser (server.Observer).
func (m *Metrics) Kicked(string) { m.kicks.Inc() }

// ConnOpened counts an opened websocket connection (ws.Observer).
func (m *Metrics) ConnOpened(platform string) { m.wsConnections.WithLabelValues(platform).Inc() }

// ConnClosed counts a closed websocket connection (ws.Observer).
func (m *Metrics) ConnClosed(platform string, code int) {
	m.wsConnections.WithLabelValues(platform).Dec()
	m.disconnects.WithLabelValues(strconv.Itoa(code)).Inc()
}

// FrameIn counts a data frame from a client (ws.Observer).
func (m *Metrics) FrameIn() { m.framesIn.Inc() }

// FramesOut counts frames written to a client (ws.Observer).
func (m *Metrics) FramesOut(n int) { m.framesOut.Add(float64(n)) }

// SlowConsumer counts a slow-consumer disconnect (ws.Observer).
func (m *Metrics) SlowConsumer() { m.slowConsumers.Inc() }

// Delivered counts pushes written to a connection in one write and, for a
// stored message, the store-to-deliver latency of the last one
// (ws.Observer). One latency per write keeps a large fan-out cheap.
func (m *Metrics) Delivered(n int, storedAt time.Time) {
	m.deliveries.Add(float64(n))
	if !storedAt.IsZero() {
		m.storeToDeliver.Observe(max(time.Since(storedAt).Seconds(), 0))
	}
}

// Error counts an error frame sent on a websocket (ws.Observer).
func (m *Metrics) Error(code int32) { m.ClientError("websocket", codes.Code(code)) }

// ClientError counts an error returned to a client of a transport.
func (m *Metrics) ClientError(transport string, code codes.Code) {
	m.errors.WithLabelValues(transport, code.String()).Inc()
}

// SetConsumerLag records how many records of topic wait for this pod.
func (m *Metrics) SetConsumerLag(topic string, records int64) {
	m.consumerLag.WithLabelValues(topic).Set(float64(records))
}
