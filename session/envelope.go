package session

// # Envelopes (a Machine's commands) and results, version 1
//
//	envelope: magic u8 (=0xE5) | version u8 (=1) | kind u8
//	          | client u64 | seq u64 | low u64 | payload (the rest)
//	kind:     1 write, 2 new session (client, seq, low 0, no payload)
//	result:   code u8 | body (the rest)
//	code:     0 ok (body: the inner machine's result; for a new session,
//	          the ID, u64), 1 session expired, 2 stale, 3 full,
//	          4 invalid (body: the reason)
//
// Integers are little-endian. A write with client 0 runs without a session:
// applied each time it is delivered (at-least-once). This is the replicated
// log's format: changing it needs a new version byte.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// Magic is the first byte of every envelope. With Options.ApplyPlain,
	// a plain command must not begin with it.
	Magic       byte = 0xE5
	envVersion       = 1
	envHeader        = 3 + 3*8
	kindWrite        = 1
	kindNew          = 2
	codeOK           = 0
	codeExpired      = 1
	codeStale        = 2
	codeFull         = 3
	codeInvalid      = 4
)

// AppendWrite appends to dst the envelope of write seq of session client,
// whose client saw every write below low completed, carrying payload (the
// inner machine's command). client 0 means no session (at-least-once; seq
// and low are then ignored).
func AppendWrite(dst []byte, client, seq, low uint64, payload []byte) []byte {
	dst = append(dst, Magic, envVersion, kindWrite)
	dst = binary.LittleEndian.AppendUint64(dst, client)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = binary.LittleEndian.AppendUint64(dst, low)
	return append(dst, payload...)
}

// AppendNewSession appends to dst the envelope that opens a session; its
// result's body is the session's ID (see ParseNewSession).
func AppendNewSession(dst []byte) []byte {
	return append(dst, Magic, envVersion, kindNew, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

// Envelope is a decoded envelope. Payload aliases the command.
type Envelope struct {
	NewSession       bool
	Client, Seq, Low uint64
	Payload          []byte
}

// DecodeEnvelope decodes cmd. Its errors are part of the replicated results.
func DecodeEnvelope(cmd []byte) (Envelope, error) {
	if len(cmd) < envHeader {
		return Envelope{}, fmt.Errorf("session: envelope of %d bytes, want at least %d", len(cmd), envHeader)
	}
	if cmd[0] != Magic {
		return Envelope{}, fmt.Errorf("session: not an envelope (first byte %#x, want %#x)", cmd[0], Magic)
	}
	if cmd[1] != envVersion {
		return Envelope{}, fmt.Errorf("session: envelope version %d, want %d", cmd[1], envVersion)
	}
	e := Envelope{
		Client:  binary.LittleEndian.Uint64(cmd[3:]),
		Seq:     binary.LittleEndian.Uint64(cmd[11:]),
		Low:     binary.LittleEndian.Uint64(cmd[19:]),
		Payload: cmd[envHeader:len(cmd):len(cmd)],
	}
	switch cmd[2] {
	case kindWrite:
		if e.Client != 0 && e.Seq == 0 {
			return Envelope{}, fmt.Errorf("session: write of session %#x with sequence number 0", e.Client)
		}
	case kindNew:
		if e.Client != 0 || e.Seq != 0 || e.Low != 0 || len(e.Payload) != 0 {
			return Envelope{}, errors.New("session: new-session envelope with a client, sequence number, low mark or payload")
		}
		e.NewSession = true
	default:
		return Envelope{}, fmt.Errorf("session: envelope kind %d, want %d (write) or %d (new session)", cmd[2], kindWrite, kindNew)
	}
	return e, nil
}

// Errors a Machine's result carries (ParseResult). None of them means the
// command was applied by the attempt that got it.
var (
	// ErrExpired: the machine holds no such session (never opened, or
	// evicted by newer sessions): the write was not applied. Open a new
	// session and send it there (an earlier attempt's outcome, if any,
	// stays unknown).
	ErrExpired = errors.New("session: session expired (evicted, or never opened); open a new session")
	// ErrStale: the write is below its session's low mark (the client
	// reported it completed): not applied.
	ErrStale = errors.New("session: write below the session's low mark; not applied")
	// ErrFull: the session holds Options.MaxSessionResults results of
	// writes not yet acknowledged: not applied. Wait for writes in flight
	// to complete, then retry.
	ErrFull = errors.New("session: too many writes in flight in this session; not applied, retry once some complete")
)

// InvalidError is a command the machine refused as malformed (or the issued
// session IDs ran out); not applied.
type InvalidError struct{ Reason string }

func (e *InvalidError) Error() string { return "session: command refused: " + e.Reason }

// ParseResult returns the inner machine's result from a Machine's result
// for an envelope, or the error it carries. The body aliases res.
func ParseResult(res []byte) ([]byte, error) {
	if len(res) == 0 {
		return nil, errors.New("session: empty result (not a session machine's?)")
	}
	switch res[0] {
	case codeOK:
		return res[1:], nil
	case codeExpired:
		return nil, ErrExpired
	case codeStale:
		return nil, ErrStale
	case codeFull:
		return nil, ErrFull
	case codeInvalid:
		return nil, &InvalidError{string(res[1:])}
	}
	return nil, fmt.Errorf("session: result code %d unknown", res[0])
}

// ParseNewSession returns the session ID from a new-session result.
func ParseNewSession(res []byte) (uint64, error) {
	body, err := ParseResult(res)
	if err != nil {
		return 0, err
	}
	if len(body) != 8 {
		return 0, fmt.Errorf("session: new-session result of %d bytes, want 8", len(body))
	}
	return binary.LittleEndian.Uint64(body), nil
}

func codeResult(code byte) []byte { return []byte{code} }

func invalidResult(reason string) []byte { return append([]byte{codeInvalid}, reason...) }

func okResult(body []byte) []byte {
	out := make([]byte, 1+len(body))
	copy(out[1:], body)
	return out
}
