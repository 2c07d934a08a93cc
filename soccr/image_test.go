package soccr

import (
	"net/netip"
	"reflect"
	"testing"

	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// A state that went through CRIU's image types (encoded and decoded) restores a working connection.
func TestImageRoundTrip(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	setInt(t, p.srv, unix.SOL_TCP, unix.TCP_NODELAY, 1)
	setInt(t, p.srv, unix.SOL_TCP, unix.TCP_KEEPIDLE, 33)
	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	c2s.write(t, p.cli, 2500)
	c2s.read(t, p.srv, 500)
	settle(t, p.cli)

	l := lock(t, p.srv)
	st, err := Dump(p.srv)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	raw, err := proto.Marshal(st.ToImage())
	if err != nil {
		t.Fatalf("marshal tcp_stream_entry (required fields missing?): %v", err)
	}
	rawOpts, err := proto.Marshal(st.TCPOptsImage())
	if err != nil {
		t.Fatal(err)
	}
	var e tcp_stream.TcpStreamEntry
	var o tcp_stream.TcpOptsEntry
	if err := proto.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(rawOpts, &o); err != nil {
		t.Fatal(err)
	}
	got := FromImage(&e, st.InQueue, st.OutQueue)
	got.ApplyTCPOptsImage(&o)
	// What CRIU keeps in its inet socket entry, not in these two.
	got.Family, got.Src, got.Dst, got.TCPState = st.Family, st.Src, st.Dst, st.TCPState

	want := *st
	want.Keepalive, want.ReuseAddr, want.V6Only = false, false, false
	want.SndBuf, want.RcvBuf, want.BufLock = 0, 0, -1
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("image round trip:\n got  %+v\n want %+v", got, &want)
	}

	closeFD(t, p.srv)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	track(t, fd)
	if err := RestoreInto(fd, got); err != nil {
		t.Fatalf("RestoreInto: %v", err)
	}
	release(t, l)
	if err := Resume(fd, got); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	// The image carried no buffer sizes: the sizes set for the refill must not stay locked.
	if v := getInt(t, fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK); v != 0 {
		t.Errorf("SO_BUF_LOCK %d after a restore without dumped sizes, want 0", v)
	}
	if v := getInt(t, fd, unix.SOL_TCP, unix.TCP_KEEPIDLE); v != 33 {
		t.Errorf("TCP_KEEPIDLE %d", v)
	}
	c2s.read(t, fd, 2000)
	s2c.write(t, fd, 1000)
	s2c.read(t, p.cli, 1000)
	noError(t, p.cli, "client")
}

// FromImage takes decoded image bytes, which may be anything; what it builds either fails validation
// or survives another trip through the image format unchanged. Nothing may panic.
func FuzzFromImage(f *testing.F) {
	seed := &State{InqLen: 3, InqSeq: 10, OutqLen: 2, OutqSeq: 99, UnsqLen: 1, MSS: 1460, OptMask: OptWscale | OptTimestamps,
		SndWscale: 7, RcvWscale: 7, Timestamp: 12345, HasWindow: true, SndWnd: 100, MaxWindow: 200, RcvWnd: 300, RcvWup: 9}
	b, err := proto.Marshal(seed.ToImage())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, []byte("abc"), []byte("xy"))
	f.Add([]byte{}, []byte{}, []byte{})
	f.Add([]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0x0f}, []byte{}, []byte{1})
	f.Fuzz(func(t *testing.T, raw, inq, outq []byte) {
		var e tcp_stream.TcpStreamEntry
		if err := (proto.UnmarshalOptions{AllowPartial: true}).Unmarshal(raw, &e); err != nil {
			return
		}
		st := FromImage(&e, inq, outq)
		st.Src = netip.MustParseAddrPort("192.0.2.1:1")
		st.Dst = netip.MustParseAddrPort("192.0.2.2:2")
		if err := st.Validate(); err != nil {
			return
		}
		again, err := proto.Marshal(st.ToImage())
		if err != nil {
			t.Fatalf("valid state does not marshal: %v", err)
		}
		var e2 tcp_stream.TcpStreamEntry
		if err := proto.Unmarshal(again, &e2); err != nil {
			t.Fatal(err)
		}
		st2 := FromImage(&e2, inq, outq)
		st2.Src, st2.Dst = st.Src, st.Dst
		// Fields that ToImage writes only when their option is negotiated do not survive otherwise.
		if st.OptMask&OptWscale == 0 {
			st.RcvWscale = 0
		}
		if st.OptMask&OptTimestamps == 0 {
			st.Timestamp = 0
		}
		if !st.HasWindow {
			st.SndWl1, st.MaxWindow, st.RcvWnd, st.RcvWup = 0, 0, 0, 0
		}
		if !reflect.DeepEqual(st, st2) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", st, st2)
		}
	})
}
