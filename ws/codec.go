package ws

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/api"
	"github.com/imlite/imlite/server/apierr"
)

// Encoding is the wire form of a frame.
type Encoding uint8

const (
	// Binary frames carry the protobuf encoding of imlite.v1.Frame.
	Binary Encoding = iota + 1
	// Text frames carry its protojson encoding.
	Text
)

func (e Encoding) String() string {
	if e == Text {
		return "json"
	}
	return "proto"
}

// ParseEncoding reads the encoding query parameter: "proto" (default) or "json".
func ParseEncoding(s string) (Encoding, error) {
	switch strings.ToLower(s) {
	case "", "proto", "protobuf", "binary":
		return Binary, nil
	case "json", "text":
		return Text, nil
	}
	return 0, fmt.Errorf("encoding %q is neither proto nor json", s)
}

var (
	protoUnmarshal = proto.UnmarshalOptions{DiscardUnknown: false}
	jsonUnmarshal  = api.JSONUnmarshalOptions
	jsonMarshal    = api.JSONMarshalOptions
)

// errEmptyFrame is returned for a frame without a body.
var errEmptyFrame = errors.New("frame has no body; set one of send_msg, pull_msg, list_conversations, ...")

// DecodeFrame decodes one client frame. Errors describe the problem for an
// error frame: invalid protobuf or JSON, unknown fields or body, or a frame
// without a body.
func DecodeFrame(enc Encoding, data []byte) (*imlitev1.Frame, error) {
	f := &imlitev1.Frame{}
	switch enc {
	case Binary:
		if err := protoUnmarshal.Unmarshal(data, f); err != nil {
			return nil, fmt.Errorf("invalid protobuf frame: %s", apierr.DecodeErrorText(err))
		}
		// Fields unknown to this server (a newer client, or garbage that
		// happens to parse) would otherwise be dropped silently.
		if unknown := f.ProtoReflect().GetUnknown(); len(unknown) > 0 {
			return f, fmt.Errorf("frame has %d bytes of fields unknown to this server; check the client's imlite.v1 version", len(unknown))
		}
	case Text:
		if !utf8.Valid(data) {
			return nil, errors.New("text frame is not valid UTF-8")
		}
		if err := jsonUnmarshal.Unmarshal(data, f); err != nil {
			return nil, fmt.Errorf("invalid JSON frame: %s", apierr.DecodeErrorText(err))
		}
	default:
		return nil, fmt.Errorf("unsupported encoding %d", enc)
	}
	if f.GetBody() == nil {
		return f, errEmptyFrame
	}
	if !utf8.ValidString(f.GetReqId()) {
		return f, errors.New("req_id is not valid UTF-8")
	}
	if len(f.GetReqId()) > maxReqIDLen {
		return f, fmt.Errorf("req_id is %d bytes, longer than the maximum %d", len(f.GetReqId()), maxReqIDLen)
	}
	return f, nil
}

// maxReqIDLen bounds req_id, which is echoed in replies.
const maxReqIDLen = 128

// EncodeFrame encodes a server frame.
func EncodeFrame(enc Encoding, f *imlitev1.Frame) ([]byte, error) {
	if enc == Text {
		return jsonMarshal.Marshal(f)
	}
	return proto.Marshal(f)
}
