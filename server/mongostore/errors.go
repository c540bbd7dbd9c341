package mongostore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/imlite/imlite/server"
)

// unavailableCodes are the server error codes that the MongoDB retryable
// writes specification lists as retryable: the server is unreachable,
// shutting down or not (or no longer) the primary. A retry later may succeed.
var unavailableCodes = []int{
	6,     // HostUnreachable
	7,     // HostNotFound
	89,    // NetworkTimeout
	91,    // ShutdownInProgress
	189,   // PrimarySteppedDown
	262,   // ExceededTimeLimit
	9001,  // SocketException
	10107, // NotWritablePrimary
	11600, // InterruptedAtShutdown
	11602, // InterruptedDueToReplStateChange
	13435, // NotPrimaryNoSecondaryOk
	13436, // NotPrimaryOrSecondary
}

// wrap returns err prefixed with op, or nil for nil. Connectivity failures,
// timeouts and the server errors in unavailableCodes also wrap
// server.ErrUnavailable, so the core returns Unavailable to clients.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, server.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isUnavailable reports whether err means that MongoDB could not be reached
// or did not reply in time. A canceled caller context does not count,
// because the caller gave up and the backend did not fail.
func isUnavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if mongo.IsTimeout(err) || mongo.IsNetworkError(err) {
		return true
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		return slices.ContainsFunc(unavailableCodes, se.HasErrorCode)
	}
	return false
}

// firstWriteError returns the first write error of an ordered InsertMany or
// BulkWrite and true, or false when err has no write errors, which includes
// a connectivity failure.
func firstWriteError(err error) (mongo.BulkWriteError, bool) {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 || bwe.WriteConcernError != nil {
		return mongo.BulkWriteError{}, false
	}
	first := bwe.WriteErrors[0]
	for _, we := range bwe.WriteErrors[1:] {
		if we.Index < first.Index {
			first = we
		}
	}
	return first, true
}

// duplicateKeyIndexes returns the model indexes of the duplicate-key errors
// of an unordered BulkWrite or InsertMany, and true when every write error
// is one. It returns false for any other failure.
func duplicateKeyIndexes(err error) ([]int, bool) {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 || bwe.WriteConcernError != nil {
		return nil, false
	}
	out := make([]int, 0, len(bwe.WriteErrors))
	for _, we := range bwe.WriteErrors {
		if !isDuplicateKeyCode(we.Code) {
			return nil, false
		}
		out = append(out, we.Index)
	}
	return out, true
}

// isDuplicateKeyCode reports whether a write error code is a duplicate key
// error (11000, or 11001 from old servers on update).
func isDuplicateKeyCode(code int) bool {
	return code == 11000 || code == 11001
}
