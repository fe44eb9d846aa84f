package mysql

import (
	"testing"
)

// FuzzResponses feeds arbitrary upstream bytes, in arbitrary chunks, through the scanner and
// the response state machine after a command of any kind: they must never panic, and a
// command ends at most once.
func FuzzResponses(f *testing.F) {
	okp := appendPackets(nil, new(byte), okPacket(statusAutocommit))
	f.Add(byte(comQuery), false, okp, uint8(3))
	f.Add(byte(comQuery), true, []byte{1, 0, 0, 1, 1, 5, 0, 0, 2, 3, 'd', 'e', 'f', 1, 0, 0, 3, 0xfb, 7, 0, 0, 4, 0xfe, 0, 0, 2, 0, 0, 0}, uint8(7))
	f.Add(byte(comStmtPrepare), false, []byte{12, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0}, uint8(1))
	f.Add(byte(comStmtExecute), true, []byte{9, 0, 0, 1, 0xff, 0x76, 4, '#', '4', '2', '0', '0', '0'}, uint8(2))
	f.Add(byte(comFieldList), false, []byte{5, 0, 0, 1, 0xfe, 0, 0, 2, 0}, uint8(4))
	f.Add(byte(comStatistics), false, []byte{3, 0, 0, 1, 'u', 'p', 0}, uint8(1))
	f.Fuzz(func(t *testing.T, typ byte, deprecateEOF bool, in []byte, chunk uint8) {
		s := &session{prepared: map[uint32]string{}}
		if deprecateEOF {
			s.caps |= capDeprecateEOF
		}
		s.queue = []*command{{typ: typ, record: true}, {typ: comQuery}}
		s.inflight.Store(2)
		var done []*command
		step := int(chunk%64) + 1
		for len(in) > 0 {
			n := min(step, len(in))
			err := s.us.feed(in[:n], func(pk packet) error { return s.onResponse(pk, &done) })
			if err != nil {
				return
			}
			in = in[n:]
		}
		if len(done) > 2 || s.inflight.Load() != int32(2-len(done)) {
			t.Fatalf("%d commands done, %d in flight", len(done), s.inflight.Load())
		}
	})
}
