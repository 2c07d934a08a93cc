package images

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	"google.golang.org/protobuf/proto"
)

// System V IPC objects of one IPC namespace (CRIU's criu/ipc_ns.c), ID being the namespace id of
// ids-PID.img:
//
//   - ipcns-shm-ID.img: an IpcShmEntry per segment. With in_pagemaps (what CRIU writes since 3.x, and
//     lazyr always) the contents are in pagemap-shmem-SHMID.img and its pages file, SHMID being the
//     segment id, so only data pages are stored; without it the contents follow the entry, padded to
//     4 bytes.
//   - ipcns-sem-ID.img: an IpcSemEntry per set, followed by its nsems u16 values padded to 8 bytes.
//   - ipcns-msg-ID.img: an IpcMsgEntry per queue, followed by qnum messages, each an IpcMsg entry
//     (length-prefixed like any entry) and its bytes padded to 8.
//
// go-criu's crit (v8) ignores in_pagemaps and pads a size that is already aligned by a further word, so
// it misreads these images when they hold more than one object; CRIU's own images have that problem
// too.

// IpcShmName is ipcns-shm-ID.img (ipc_shm.IpcShmEntry).
func IpcShmName(id uint32) string { return fmt.Sprintf("ipcns-shm-%d.img", id) }

// IpcSemName is ipcns-sem-ID.img (ipc_sem.IpcSemEntry).
func IpcSemName(id uint32) string { return fmt.Sprintf("ipcns-sem-%d.img", id) }

// IpcMsgName is ipcns-msg-ID.img (ipc_msg.IpcMsgEntry).
func IpcMsgName(id uint32) string { return fmt.Sprintf("ipcns-msg-%d.img", id) }

func roundUp(n, to uint64) uint64 { return (n + to - 1) / to * to }

// IpcShm is one shared memory segment. Data holds its contents when the image carries them inline (an
// older CRIU's images); nil means they are in pagemap-shmem-SHMID.img.
type IpcShm struct {
	Entry *ipc_shm.IpcShmEntry
	Data  []byte
}

// IpcSem is one semaphore set with its values.
type IpcSem struct {
	Entry  *ipc_sem.IpcSemEntry
	Values []uint16
}

// IpcMsg is one queued message.
type IpcMsg struct {
	Type uint64
	Data []byte
}

// IpcMsgQueue is one message queue with its messages, oldest first.
type IpcMsgQueue struct {
	Entry *ipc_msg.IpcMsgEntry
	Msgs  []IpcMsg
}

// WriteIpcShm writes ipcns-shm-ID.img with in_pagemaps set on every entry: the contents go to
// pagemap-shmem-SHMID.img, written separately.
func (d *Dir) WriteIpcShm(id uint32, segs []*ipc_shm.IpcShmEntry) error {
	name := IpcShmName(id)
	return d.writeIPC(name, func(buf []byte) ([]byte, error) {
		for _, s := range segs {
			e := proto.Clone(s).(*ipc_shm.IpcShmEntry)
			e.InPagemaps = proto.Bool(true)
			var err error
			if buf, err = appendEntry(buf, e); err != nil {
				return nil, err
			}
		}
		return buf, nil
	})
}

// WriteIpcSem writes ipcns-sem-ID.img; each set's values must number its nsems.
func (d *Dir) WriteIpcSem(id uint32, sets []IpcSem) error {
	name := IpcSemName(id)
	return d.writeIPC(name, func(buf []byte) ([]byte, error) {
		for i, s := range sets {
			if uint64(len(s.Values)) != uint64(s.Entry.GetNsems()) {
				return nil, fmt.Errorf("set %d: %d values for %d semaphores", i, len(s.Values), s.Entry.GetNsems())
			}
			var err error
			if buf, err = appendEntry(buf, s.Entry); err != nil {
				return nil, err
			}
			start := len(buf)
			for _, v := range s.Values {
				buf = binary.LittleEndian.AppendUint16(buf, v)
			}
			buf = append(buf, make([]byte, roundUp(uint64(len(buf)-start), 8)-uint64(len(buf)-start))...)
		}
		return buf, nil
	})
}

// WriteIpcMsg writes ipcns-msg-ID.img; each queue's messages must number its qnum.
func (d *Dir) WriteIpcMsg(id uint32, queues []IpcMsgQueue) error {
	name := IpcMsgName(id)
	return d.writeIPC(name, func(buf []byte) ([]byte, error) {
		for i, q := range queues {
			if uint64(len(q.Msgs)) != uint64(q.Entry.GetQnum()) {
				return nil, fmt.Errorf("queue %d: %d messages for qnum %d", i, len(q.Msgs), q.Entry.GetQnum())
			}
			var err error
			if buf, err = appendEntry(buf, q.Entry); err != nil {
				return nil, err
			}
			for _, m := range q.Msgs {
				if uint64(len(m.Data)) > math.MaxUint32 {
					return nil, fmt.Errorf("queue %d: message of %d bytes", i, len(m.Data))
				}
				if buf, err = appendEntry(buf, &ipc_msg.IpcMsg{Mtype: proto.Uint64(m.Type), Msize: proto.Uint32(uint32(len(m.Data)))}); err != nil {
					return nil, err
				}
				buf = append(buf, m.Data...)
				buf = append(buf, make([]byte, roundUp(uint64(len(m.Data)), 8)-uint64(len(m.Data)))...)
			}
		}
		return buf, nil
	})
}

// writeIPC writes an IPC image whose body fill appends (System V objects are small: the shared memory
// contents, the one big part, are not in these images).
func (d *Dir) writeIPC(name string, fill func(buf []byte) ([]byte, error)) error {
	k, err := kindOf(name)
	if err != nil {
		return err
	}
	buf, err := appendHeader(nil, k)
	if err != nil {
		return err
	}
	if buf, err = fill(buf); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return d.writeAtomic(name, func(w io.Writer) error {
		_, err := w.Write(buf)
		return err
	})
}

// ReadIpcShm reads ipcns-shm-ID.img.
func (d *Dir) ReadIpcShm(id uint32) ([]IpcShm, error) {
	var out []IpcShm
	err := d.readIPC(IpcShmName(id), func(r *reader) error {
		e := &ipc_shm.IpcShmEntry{}
		if err := r.entry(e); err != nil {
			return err
		}
		s := IpcShm{Entry: e}
		if !e.GetInPagemaps() {
			data, err := r.readN("segment contents", e.GetSize(), false)
			if err != nil {
				return err
			}
			if err := r.skip("padding", roundUp(e.GetSize(), 4)-e.GetSize()); err != nil {
				return err
			}
			s.Data = data
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// ReadIpcSem reads ipcns-sem-ID.img.
func (d *Dir) ReadIpcSem(id uint32) ([]IpcSem, error) {
	var out []IpcSem
	err := d.readIPC(IpcSemName(id), func(r *reader) error {
		e := &ipc_sem.IpcSemEntry{}
		if err := r.entry(e); err != nil {
			return err
		}
		n := 2 * uint64(e.GetNsems())
		b, err := r.readN("semaphore values", roundUp(n, 8), false)
		if err != nil {
			return err
		}
		s := IpcSem{Entry: e, Values: make([]uint16, e.GetNsems())}
		for i := range s.Values {
			s.Values[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// ReadIpcMsg reads ipcns-msg-ID.img.
func (d *Dir) ReadIpcMsg(id uint32) ([]IpcMsgQueue, error) {
	var out []IpcMsgQueue
	err := d.readIPC(IpcMsgName(id), func(r *reader) error {
		e := &ipc_msg.IpcMsgEntry{}
		if err := r.entry(e); err != nil {
			return err
		}
		q := IpcMsgQueue{Entry: e}
		for i := uint32(0); i < e.GetQnum(); i++ {
			m := &ipc_msg.IpcMsg{}
			if err := r.entry(m); err != nil {
				return err
			}
			data, err := r.readN("message", uint64(m.GetMsize()), false)
			if err != nil {
				return err
			}
			if err := r.skip("padding", roundUp(uint64(m.GetMsize()), 8)-uint64(m.GetMsize())); err != nil {
				return err
			}
			q.Msgs = append(q.Msgs, IpcMsg{Type: m.GetMtype(), Data: data})
		}
		out = append(out, q)
		return nil
	})
	return out, err
}

// readIPC checks the header of image name and calls one for every object until the end of the file.
func (d *Dir) readIPC(name string, one func(r *reader) error) error {
	k, err := kindOf(name)
	if err != nil {
		return err
	}
	f, size, err := d.openImage(name)
	if err != nil {
		return err
	}
	defer f.Close()
	r := newReader(f, size, name)
	if err := r.expectHeader(k); err != nil {
		return err
	}
	for !r.atEOF() {
		if err := one(r); err != nil {
			return err
		}
	}
	return nil
}

// decodeIPC is DecodeFile's part for the IPC images: the messages of a queue are entries of their own
// (like ghost file chunks), and every raw part shows as its size.
func decodeIPC(r *reader, magic string, add func(e proto.Message, extra string)) error {
	for !r.atEOF() {
		switch magic {
		case "IPCNS_SHM":
			e := &ipc_shm.IpcShmEntry{}
			if err := r.entry(e); err != nil {
				return err
			}
			if e.GetInPagemaps() {
				add(e, "")
				continue
			}
			if err := r.skip("segment contents", roundUp(e.GetSize(), 4)); err != nil {
				return err
			}
			add(e, countBytes(e.GetSize()))
		case "IPCNS_SEM":
			e := &ipc_sem.IpcSemEntry{}
			if err := r.entry(e); err != nil {
				return err
			}
			if err := r.skip("semaphore values", roundUp(2*uint64(e.GetNsems()), 8)); err != nil {
				return err
			}
			add(e, countBytes(2*uint64(e.GetNsems())))
		case "IPCNS_MSG":
			e := &ipc_msg.IpcMsgEntry{}
			if err := r.entry(e); err != nil {
				return err
			}
			add(e, "")
			for i := uint32(0); i < e.GetQnum(); i++ {
				m := &ipc_msg.IpcMsg{}
				if err := r.entry(m); err != nil {
					return err
				}
				if err := r.skip("message", roundUp(uint64(m.GetMsize()), 8)); err != nil {
					return err
				}
				add(m, countBytes(uint64(m.GetMsize())))
			}
		default:
			return fmt.Errorf("%s: decoding %s images is not supported", r.name, magic)
		}
	}
	return nil
}
