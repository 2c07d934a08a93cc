package images

import (
	"strings"
	"testing"
)

func TestKindsTable(t *testing.T) {
	seen := map[string]bool{}
	for i := range kinds {
		k := &kinds[i]
		name := sampleName(k)
		if seen[k.String()] {
			t.Errorf("%s listed twice", k)
		}
		seen[k.String()] = true
		// Every sample name must resolve to its own row, and to no other.
		got, err := kindOf(name)
		if err != nil || got != k {
			t.Errorf("kindOf(%q) = %v, %v; want %s", name, got, err, k)
		}
		base := strings.TrimSuffix(name, ".img")
		for j := range kinds {
			if j != i && kinds[j].bare == k.bare && kinds[j].match(base) {
				t.Errorf("%q matches both %s and %s", name, k, &kinds[j])
			}
		}
		switch k.layout {
		case layoutRaw:
			if k.magic != "" || k.newEntry != nil {
				t.Errorf("%s: raw image with magic or entry type", k)
			}
			continue
		case layoutPayload:
			if k.payloadLen == nil {
				t.Errorf("%s: payload layout without payloadLen", k)
			}
		}
		if _, err := magicValue(k.magic); err != nil {
			t.Errorf("%s: %v", k, err)
		}
		if k.layout != layoutPagemap && k.layout != layoutGhost && k.newEntry == nil {
			t.Errorf("%s: no entry type", k)
		}
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		got, want, magic string
	}{
		{CoreName(7), "core-7.img", "CORE"},
		{IDsName(7), "ids-7.img", "IDS"},
		{MmName(7), "mm-7.img", "MM"},
		{PagemapName(7), "pagemap-7.img", "PAGEMAP"},
		{PagesName(3), "pages-3.img", ""},
		{FdinfoName(3), "fdinfo-3.img", "FDINFO"},
		{FsName(7), "fs-7.img", "FS"},
		{CredsName(7), "creds-7.img", "CREDS"},
		{SigactsName(7), "sigacts-7.img", "SIGACT"},
		{ItimersName(7), "itimers-7.img", "ITIMERS"},
		{PosixTimersName(7), "posix-timers-7.img", "POSIX_TIMERS"},
		{RlimitName(7), "rlimit-7.img", "RLIMIT"},
		{SignalName(7, true), "signal-s-7.img", "SIGNAL"},
		{SignalName(7, false), "signal-p-7.img", "SIGNAL"},
		{UtsnsName(9), "utsns-9.img", "UTSNS"},
		{IpcVarName(9), "ipcns-var-9.img", "IPC_VAR"},
		{MountpointsName(9), "mountpoints-9.img", "MNTS"},
		{NetnsName(9), "netns-9.img", "NETNS"},
		{NetdevName(9), "netdev-9.img", "NETDEV"},
		{UsernsName(9), "userns-9.img", "USERNS"},
		{TimensName(9), "timens-9.img", "TIMENS"},
		{PidnsName(9), "pidns-9.img", "PIDNS"},
		{PagemapShmemName(77), "pagemap-shmem-77.img", "PAGEMAP"},
		{GhostFileName(255), "ghost-file-ff.img", "GHOST_FILE"},
		{TCPStreamName(4096), "tcp-stream-1000.img", "TCP_STREAM"},
		{InventoryName, "inventory.img", "INVENTORY"},
		{PstreeName, "pstree.img", "PSTREE"},
		{FilesName, "files.img", "FILES"},
		{PipesDataName, "pipes-data.img", "PIPES_DATA"},
		{StatsDumpName, "stats-dump", "STATS"},
		{StatsRestoreName, "stats-restore", "STATS"},
		{UnixSkName, "unixsk.img", "UNIXSK"},
		{InetSkName, "inetsk.img", "INETSK"},
		{EventfdName, "eventfd.img", "EVENTFD_FILE"},
		{EventpollTfdName, "eventpoll-tfd.img", "EVENTPOLL_TFD"},
		{InotifyWdName, "inotify-wd.img", "INOTIFY_WD"},
		{TtyInfoName, "tty-info.img", "TTY_INFO"},
		{IrmapCacheName, "irmap-cache.img", "IRMAP_CACHE"},
	} {
		if c.got != c.want {
			t.Errorf("name %q, want %q", c.got, c.want)
			continue
		}
		k, err := kindOf(c.got)
		if err != nil {
			t.Errorf("%s: %v", c.got, err)
			continue
		}
		if k.magic != c.magic {
			t.Errorf("%s: magic %q, want %q", c.got, k.magic, c.magic)
		}
	}
	for _, bad := range []string{"core.img", "core-.img", "core-x.img", "core-1", "core-1.img.tmp", "../core-1.img", "ghost-file-XY.img", "nosuch.img", "stats-.img", "pagemap-shmem-.img"} {
		if k, err := kindOf(bad); err == nil {
			t.Errorf("kindOf(%q) = %s, want error", bad, k)
		}
	}
}
