package ws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// FuzzDecodeFrame feeds arbitrary client frames to the decoder. It must
// never panic, and a frame it accepts must survive an encode and decode
// unchanged. Seeds live in testdata/fuzz/FuzzDecodeFrame.
func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"req_id":"1","send_msg":{"client_msg_id":"c1","recv_id":"bob","content":"hi"}}`), true)
	f.Add([]byte(`{"req_id":"2","pull_msg":{"conversation_id":"s:a:b","begin_seq":"1"}}`), true)
	f.Add([]byte(`{"ping":{}}`), true)
	send, _ := proto.Marshal(&imlitev1.Frame{ReqId: "3", Body: &imlitev1.Frame_SendMsg{SendMsg: &imlitev1.SendMsgRequest{ClientMsgId: "c", GroupId: "g", Content: "👋"}}})
	f.Add(send, false)
	f.Add([]byte{0x0a, 0x01, 0x31}, false)
	f.Fuzz(func(t *testing.T, data []byte, text bool) {
		enc := Binary
		if text {
			enc = Text
		}
		frame, err := DecodeFrame(enc, data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("decode error without a message")
			}
			return
		}
		if frame.GetBody() == nil {
			t.Fatal("accepted a frame without a body")
		}
		again, err := EncodeFrame(enc, frame)
		if err != nil {
			t.Fatalf("re-encode accepted frame: %v", err)
		}
		back, err := DecodeFrame(enc, again)
		if err != nil {
			t.Fatalf("decode re-encoded frame: %v", err)
		}
		if !proto.Equal(frame, back) {
			t.Fatalf("round trip changed the frame:\n%v\n%v", frame, back)
		}
	})
}

// FuzzWireParser feeds arbitrary bytes to the websocket frame parser, whole
// and split in two. It must never panic, and the split must not change the
// messages it emits or the error it reports.
func FuzzWireParser(f *testing.F) {
	f.Add(maskedFrame(opBinary, true, []byte("hello")), uint16(3), false)
	f.Add(append(maskedFrame(opText, false, []byte("he")), maskedFrame(opContinuation, true, []byte("llo"))...), uint16(7), false)
	f.Add(maskedFrame(opPing, true, []byte("p")), uint16(1), false)
	f.Add(maskedFrame(opClose, true, []byte{0x03, 0xe8}), uint16(0), false)
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(5), false)
	f.Fuzz(func(t *testing.T, data []byte, split uint16, compression bool) {
		whole, wholeErr := parseAll(compression, [][]byte{data})
		at := int(split) % (len(data) + 1)
		parts, partsErr := parseAll(compression, [][]byte{data[:at], data[at:]})
		if (wholeErr == nil) != (partsErr == nil) {
			t.Fatalf("whole error %v, split at %d error %v", wholeErr, at, partsErr)
		}
		if wholeErr != nil {
			var pe *protocolError
			if !errors.As(wholeErr, &pe) || pe.code == 0 || pe.reason == "" {
				t.Fatalf("error %v is not a protocol error with code and reason", wholeErr)
			}
			return
		}
		if len(whole) != len(parts) {
			t.Fatalf("whole gave %d messages, split at %d gave %d", len(whole), at, len(parts))
		}
		for i := range whole {
			if whole[i].op != parts[i].op || !bytes.Equal(whole[i].payload, parts[i].payload) {
				t.Fatalf("message %d differs: %v vs %v", i, whole[i], parts[i])
			}
		}
	})
}

// parseAll feeds chunks to a fresh parser and copies what it emits.
func parseAll(compression bool, chunks [][]byte) ([]wireMessage, error) {
	p := wireParser{maxMessage: 4096, compression: compression}
	var out []wireMessage
	for _, c := range chunks {
		buf := append([]byte(nil), c...)
		err := p.feed(buf, func(m wireMessage) error {
			out = append(out, wireMessage{op: m.op, payload: append([]byte(nil), m.payload...)})
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// maskedFrame builds a client frame with a fixed mask.
func maskedFrame(op byte, fin bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var out []byte
	switch n := len(payload); {
	case n < 126:
		out = []byte{b0, 0x80 | byte(n)}
	case n < 1<<16:
		out = []byte{b0, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(out[2:], uint16(n))
	default:
		out = []byte{b0, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint64(out[2:], uint64(n))
	}
	mask := []byte{0x11, 0x22, 0x33, 0x44}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i&3])
	}
	return out
}

func TestWireParserCases(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 5000)
	tests := []struct {
		name     string
		data     []byte
		wantOps  []byte
		wantCode int
	}{
		{"binary", maskedFrame(opBinary, true, []byte("a")), []byte{opBinary}, 0},
		{"fragments", append(maskedFrame(opText, false, []byte("a")), maskedFrame(opContinuation, true, []byte("b"))...), []byte{opText}, 0},
		{"ping inside fragments", append(append(maskedFrame(opText, false, []byte("a")), maskedFrame(opPing, true, nil)...), maskedFrame(opContinuation, true, []byte("b"))...), []byte{opPing, opText}, 0},
		{"unmasked", []byte{0x82, 0x01, 'a'}, nil, closeProtocolError},
		{"oversized", maskedFrame(opBinary, true, big), nil, closeMessageTooBig},
		{"long control", maskedFrame(opPing, true, bytes.Repeat([]byte("p"), 126)), nil, closeProtocolError},
		{"unknown opcode", maskedFrame(0x3, true, nil), nil, closeProtocolError},
		{"stray continuation", maskedFrame(opContinuation, true, nil), nil, closeProtocolError},
		{"RSV1 without deflate", append([]byte{0xC2}, maskedFrame(opBinary, true, nil)[1:]...), nil, closeProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := parseAll(false, [][]byte{tt.data})
			var pe *protocolError
			switch {
			case tt.wantCode != 0 && (!errors.As(err, &pe) || pe.code != tt.wantCode):
				t.Fatalf("error = %v, want close code %d", err, tt.wantCode)
			case tt.wantCode == 0 && err != nil:
				t.Fatalf("error = %v, want none", err)
			}
			var ops []byte
			for _, m := range msgs {
				ops = append(ops, m.op)
			}
			if !bytes.Equal(ops, tt.wantOps) {
				t.Errorf("ops = %v, want %v", ops, tt.wantOps)
			}
		})
	}
}
