package kafkaqueue

import "github.com/twmb/franz-go/pkg/kgo"

// HeaderCarrier is an accessor for the headers of a Kafka record by key. Its
// method set is that of TextMapCarrier in OpenTelemetry's propagation
// package, so a propagator can inject trace context into a record and
// extract it again without this package importing OpenTelemetry.
type HeaderCarrier struct {
	Record *kgo.Record
}

// Get returns the value of the first header with key, or "" if there is none.
func (c HeaderCarrier) Get(key string) string {
	for _, h := range c.Record.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set replaces every header with key by one header with value.
func (c HeaderCarrier) Set(key, value string) {
	kept := c.Record.Headers[:0]
	for _, h := range c.Record.Headers {
		if h.Key != key {
			kept = append(kept, h)
		}
	}
	c.Record.Headers = append(kept, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

// Keys returns the header keys in record order, each once.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c.Record.Headers))
	seen := make(map[string]bool, len(c.Record.Headers))
	for _, h := range c.Record.Headers {
		if !seen[h.Key] {
			seen[h.Key] = true
			keys = append(keys, h.Key)
		}
	}
	return keys
}

// headerCarriers returns a carrier for each record.
func headerCarriers(recs []*kgo.Record) []HeaderCarrier {
	out := make([]HeaderCarrier, len(recs))
	for i, r := range recs {
		out[i] = HeaderCarrier{Record: r}
	}
	return out
}
