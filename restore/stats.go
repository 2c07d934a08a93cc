package restore

import (
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// writeStats leaves CRIU's stats-restore.img in the image directory, as `criu restore` does: container
// tools (podman's --print-stats, go-criu's stats package) read a restore's timings from it. Times are in
// microseconds, as CRIU writes them; pages_restored counts the pages restore itself filled (a lazy
// restore's daemon reports its own). The image is not fsynced: it is a report, not state.
func writeStats(dir string, st *Stats) error {
	d, err := images.CreateWithOptions(dir, images.Options{DeferSync: true})
	if err != nil {
		return err
	}
	defer d.Close()
	us := func(d time.Duration) *uint32 { return proto.Uint32(uint32(min(d.Microseconds(), 1<<32-1))) }
	return d.Write(images.StatsRestoreName, &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
		PagesCompared:   proto.Uint64(0),
		PagesSkippedCow: proto.Uint64(0),
		ForkingTime:     us(st.ForkingTime),
		RestoreTime:     us(st.RestoreTime),
		PagesRestored:   proto.Uint64(st.PagesRestored),
	}})
}
