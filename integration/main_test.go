package integration

import (
	"os"
	"testing"

	"github.com/lazyr/lazyr/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.CheckNoLeakedFds(m)) }
