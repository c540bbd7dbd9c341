package mempresence

import (
	"testing"

	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/storetest"
)

func TestPresence(t *testing.T) {
	storetest.TestPresence(t, func(*testing.T) server.Presence { return New() })
}
