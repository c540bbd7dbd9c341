package server

import (
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// Observer receives pipeline events, for metrics. Implementations must be
// fast and safe for concurrent use; they run on the pipeline's goroutines.
type Observer interface {
	// Accepted is called when SendMsg has published a message.
	Accepted(msg *imlitev1.Message)
	// Stored is called for each message the store stage stored; storedAt
	// minus the message's server_time is the send-to-store latency.
	Stored(msg *imlitev1.Message, storedAt time.Time)
	// Pushed is called when the push stage handed a message to the local
	// deliverer for the given number of recipients.
	Pushed(msg *imlitev1.Message, recipients int, storedAt time.Time)
	// Kicked is called for each KickUser.
	Kicked(userID string)
}

type nopObserver struct{}

func (nopObserver) Accepted(*imlitev1.Message)               {}
func (nopObserver) Stored(*imlitev1.Message, time.Time)      {}
func (nopObserver) Pushed(*imlitev1.Message, int, time.Time) {}
func (nopObserver) Kicked(string)                            {}
