package ws

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// The server parses client frames itself (RFC 6455 section 5) instead of
// through gorilla's reader: gorilla's NextReader blocks until a data frame
// arrives, which would hold a goroutine for every connection that sent only
// a pong. This parser is fed whatever bytes a non-blocking read returned and
// keeps no buffer between frames, so an idle connection costs nothing here.

// WebSocket opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxControlPayload is the largest control frame payload RFC 6455 allows.
const maxControlPayload = 125

// wireMessage is one complete message or control frame.
type wireMessage struct {
	op      byte
	payload []byte
}

// protocolError ends a connection with a close code and reason.
type protocolError struct {
	code   int
	reason string
}

func (e *protocolError) Error() string { return fmt.Sprintf("close %d: %s", e.code, e.reason) }

// wireParser assembles messages from the bytes of one connection. It is not
// safe for concurrent use; the poller hands a connection to one worker at a
// time.
type wireParser struct {
	// maxMessage bounds a message after reassembly and decompression.
	maxMessage int
	// compression is true when permessage-deflate was negotiated.
	compression bool

	// pending holds bytes of an incomplete frame; nil when none.
	pending []byte
	// msg holds the fragments of an unfinished data message.
	msg           []byte
	msgOp         byte
	msgCompressed bool
	inMessage     bool
}

// feed parses data (appended to any pending bytes) and calls emit for each
// complete message or control frame. emit must not retain payload. It
// returns a *protocolError when the connection must close.
func (p *wireParser) feed(data []byte, emit func(wireMessage) error) error {
	buf := data
	if len(p.pending) > 0 {
		p.pending = append(p.pending, data...)
		buf = p.pending
	}
	for {
		n, err := p.parseFrame(buf, emit)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		buf = buf[n:]
	}
	// Keep the incomplete rest, in a buffer of its own so the caller's
	// read buffer can be reused.
	switch {
	case len(buf) == 0:
		p.pending = nil
	case len(p.pending) > 0 && &buf[0] == &p.pending[len(p.pending)-len(buf)]:
		p.pending = append(p.pending[:0], buf...)
	default:
		p.pending = append([]byte(nil), buf...)
	}
	return nil
}

// parseFrame parses one frame at the start of buf. It returns the bytes
// consumed, or 0 when buf holds no complete frame yet.
func (p *wireParser) parseFrame(buf []byte, emit func(wireMessage) error) (int, error) {
	if len(buf) < 2 {
		return 0, nil
	}
	b0, b1 := buf[0], buf[1]
	fin := b0&0x80 != 0
	rsv1 := b0&0x40 != 0
	op := b0 & 0x0F
	if b0&0x30 != 0 {
		return 0, &protocolError{closeProtocolError, "RSV2 and RSV3 must be 0"}
	}
	if b1&0x80 == 0 {
		return 0, &protocolError{closeProtocolError, "client frames must be masked"}
	}

	// 1. Header and payload length.
	length := int64(b1 & 0x7F)
	header := 2
	switch length {
	case 126:
		if len(buf) < 4 {
			return 0, nil
		}
		length = int64(binary.BigEndian.Uint16(buf[2:4]))
		header = 4
	case 127:
		if len(buf) < 10 {
			return 0, nil
		}
		u := binary.BigEndian.Uint64(buf[2:10])
		if u > 1<<62 {
			return 0, &protocolError{closeProtocolError, "invalid frame length"}
		}
		length = int64(u)
		header = 10
	}

	// 2. Checks that need only the header, so an oversized frame is refused
	// before its payload is buffered.
	isControl := op >= opClose
	switch {
	case isControl && (!fin || length > maxControlPayload):
		return 0, &protocolError{closeProtocolError, "control frames must be final and at most 125 bytes"}
	case isControl && rsv1:
		return 0, &protocolError{closeProtocolError, "control frames cannot be compressed"}
	case op != opContinuation && op != opText && op != opBinary && !isControl:
		return 0, &protocolError{closeProtocolError, fmt.Sprintf("unknown opcode %d", op)}
	case op > opPong:
		return 0, &protocolError{closeProtocolError, fmt.Sprintf("unknown opcode %d", op)}
	case rsv1 && (!p.compression || op == opContinuation):
		return 0, &protocolError{closeProtocolError, "RSV1 set without permessage-deflate on the first frame"}
	case op == opContinuation && !p.inMessage:
		return 0, &protocolError{closeProtocolError, "continuation frame without a message to continue"}
	case (op == opText || op == opBinary) && p.inMessage:
		return 0, &protocolError{closeProtocolError, "new message before the previous one was finished"}
	case !isControl && int64(len(p.msg))+length > int64(p.maxMessage):
		return 0, &protocolError{closeMessageTooBig, fmt.Sprintf("message of at least %d bytes exceeds the limit of %d bytes", int64(len(p.msg))+length, p.maxMessage)}
	}

	// 3. Wait for the whole frame, then unmask it in place.
	total := int64(header+4) + length
	if int64(len(buf)) < total {
		return 0, nil
	}
	var mask [4]byte
	copy(mask[:], buf[header:header+4])
	payload := buf[header+4 : total]
	for i := range payload {
		payload[i] ^= mask[i&3]
	}

	// 4. Control frames stand alone; data frames accumulate.
	if isControl {
		return int(total), emit(wireMessage{op: op, payload: payload})
	}
	if op != opContinuation {
		p.inMessage, p.msgOp, p.msgCompressed = true, op, rsv1
	}
	if !fin {
		p.msg = append(p.msg, payload...)
		return int(total), nil
	}
	data := payload
	if len(p.msg) > 0 {
		data = append(p.msg, payload...)
	}
	op, compressed := p.msgOp, p.msgCompressed
	p.msg, p.inMessage = nil, false
	if compressed {
		inflated, err := inflate(data, p.maxMessage)
		if err != nil {
			return 0, err
		}
		data = inflated
	}
	return int(total), emit(wireMessage{op: op, payload: data})
}

// inflateTail ends a permessage-deflate message (RFC 7692 section 7.2.2),
// followed by an empty final block so the reader reports io.EOF.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

var flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}

// inflate decompresses a message, refusing output beyond limit bytes so a
// small compressed frame cannot expand without bound.
func inflate(data []byte, limit int) ([]byte, error) {
	fr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(fr)
	if err := fr.(flate.Resetter).Reset(io.MultiReader(bytes.NewReader(data), bytes.NewReader(inflateTail)), nil); err != nil {
		return nil, &protocolError{closeInvalidPayload, "cannot reset decompressor"}
	}
	out, err := io.ReadAll(io.LimitReader(fr, int64(limit)+1))
	if err != nil {
		return nil, &protocolError{closeInvalidPayload, "invalid compressed message: " + err.Error()}
	}
	if len(out) > limit {
		return nil, &protocolError{closeMessageTooBig, fmt.Sprintf("message inflates past the limit of %d bytes", limit)}
	}
	return out, nil
}
