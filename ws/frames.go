package ws

import (
	"encoding/binary"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// The server writes its frames itself: unmasked, final, never compressed.
// RFC 7692 lets an endpoint send uncompressed messages even when
// permessage-deflate was negotiated, so compression only ever applies to
// what clients send. Framing here lets one push frame be shared by every
// recipient and written with writev, with no per-connection buffer.

// serverFrame returns a complete frame with the opcode and payload.
func serverFrame(opcode byte, payload []byte) []byte {
	frame := make([]byte, 0, frameHeaderLen(len(payload))+len(payload))
	frame = appendFrameHeader(frame, opcode, len(payload))
	return append(frame, payload...)
}

func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n < 1<<16:
		return 4
	}
	return 10
}

// appendFrameHeader appends the header of a final, unmasked frame.
func appendFrameHeader(dst []byte, opcode byte, n int) []byte {
	dst = append(dst, 0x80|opcode)
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n < 1<<16:
		dst = append(dst, 126)
		return binary.BigEndian.AppendUint16(dst, uint16(n))
	}
	dst = append(dst, 127)
	return binary.BigEndian.AppendUint64(dst, uint64(n))
}

// encodeWireFrame encodes f in enc as a complete websocket frame.
func encodeWireFrame(enc Encoding, f *imlitev1.Frame) ([]byte, error) {
	payload, err := EncodeFrame(enc, f)
	if err != nil {
		return nil, err
	}
	opcode := byte(opBinary)
	if enc == Text {
		opcode = opText
	}
	return serverFrame(opcode, payload), nil
}

// pingFrame is the server's ping, the same bytes for every connection.
var pingFrame = serverFrame(opPing, nil)

// closePayload is the payload of a close frame: the code, then the reason
// cut to fit the 125-byte limit of control frames.
func closePayload(code int, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return append(p, truncateReason(reason)...)
}
