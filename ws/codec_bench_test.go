package ws_test

import (
	"strings"
	"testing"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/ws"
)

// benchContent is a 100-byte message body, the size the load tool sends by
// default.
var benchContent = strings.Repeat("x", 100)

// benchFrames are a client's send request and the push of the stored
// message as the server sends it.
var benchFrames = []struct {
	name  string
	frame *imlitev1.Frame
}{
	{"send", &imlitev1.Frame{ReqId: "s1764900000000000000", Body: &imlitev1.Frame_SendMsg{SendMsg: &imlitev1.SendMsgRequest{
		ClientMsgId: "m12345", RecvId: "bob", ContentType: 1, Content: benchContent, ClientTime: 1764900000000,
	}}}},
	{"push", &imlitev1.Frame{Body: &imlitev1.Frame_Push{Push: &imlitev1.PushMsg{Msg: benchMessage(42)}}}},
}

// benchMessage returns a stored single-chat message with every field a
// real one has.
func benchMessage(seq int64) *imlitev1.Message {
	return &imlitev1.Message{
		ServerMsgId: "01a242ec-2e6e-7c32-8aef-ce10056c2068", ClientMsgId: "m12345",
		SenderId: "alice", SenderPlatform: "ios", ConversationId: "s:alice:bob",
		ConversationType: imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE, RecvId: "bob",
		Seq: seq, ContentType: 1, Content: benchContent, ClientTime: 1764900000000, ServerTime: 1764900000003,
	}
}

var benchEncodings = []ws.Encoding{ws.Binary, ws.Text}

// BenchmarkEncodeFrame measures ws.EncodeFrame. The bytes per second it
// reports are frame bytes produced.
func BenchmarkEncodeFrame(b *testing.B) {
	for _, f := range benchFrames {
		for _, enc := range benchEncodings {
			b.Run(f.name+"/"+enc.String(), func(b *testing.B) {
				data, err := ws.EncodeFrame(enc, f.frame)
				if err != nil {
					b.Fatalf("EncodeFrame: %v", err)
				}
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := ws.EncodeFrame(enc, f.frame); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDecodeFrame measures ws.DecodeFrame on the frames that
// BenchmarkEncodeFrame produces.
func BenchmarkDecodeFrame(b *testing.B) {
	for _, f := range benchFrames {
		for _, enc := range benchEncodings {
			b.Run(f.name+"/"+enc.String(), func(b *testing.B) {
				data, err := ws.EncodeFrame(enc, f.frame)
				if err != nil {
					b.Fatalf("EncodeFrame: %v", err)
				}
				if _, err := ws.DecodeFrame(enc, data); err != nil {
					b.Fatalf("DecodeFrame of an encoded %s frame: %v", f.name, err)
				}
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := ws.DecodeFrame(enc, data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
