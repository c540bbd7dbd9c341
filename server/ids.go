package server

import (
	"fmt"
	"strings"
	"unicode/utf8"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
)

// MaxIDLen is the longest user id or group id, in bytes.
const MaxIDLen = 64

// maxPlatformLen is the longest platform name, in bytes.
const maxPlatformLen = 16

// Conversation id prefixes. User and group ids cannot contain ':', so
// "s:" + a + ":" + b cannot collide with another pair or with a group.
const (
	singlePrefix = "s:"
	groupPrefix  = "g:"
)

// isIDByte reports whether c may appear in a user or group id: ASCII letters,
// digits and "_.@-". The set excludes ':' (the conversation id separator),
// '/' and '\x00', so ids are safe in URL paths and store keys.
func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '@' || c == '-'
}

// ValidateID checks a user or group id; field names the request field in the error.
func ValidateID(field, id string) error {
	if id == "" {
		return apierr.InvalidArgument("%s is required", field)
	}
	if len(id) > MaxIDLen {
		return apierr.InvalidArgument("%s is %d bytes, longer than the maximum %d", field, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !isIDByte(id[i]) {
			return apierr.InvalidArgument("%s %q contains %q; allowed are ASCII letters, digits and _.@-", field, printable(id), printable(id[i:i+1]))
		}
	}
	return nil
}

// ValidatePlatform checks a platform name such as "ios" or "web".
func ValidatePlatform(field, p string) error {
	if p == "" {
		return apierr.InvalidArgument("%s is required", field)
	}
	if len(p) > maxPlatformLen {
		return apierr.InvalidArgument("%s is %d bytes, longer than the maximum %d", field, len(p), maxPlatformLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return apierr.InvalidArgument("%s %q must be lowercase letters, digits, _ or -", field, printable(p))
		}
	}
	return nil
}

// validateText checks a free-form string field for UTF-8 and length.
func validateText(field, s string, maxBytes int) error {
	if len(s) > maxBytes {
		return apierr.InvalidArgument("%s is %d bytes, longer than the maximum %d", field, len(s), maxBytes)
	}
	if !utf8.ValidString(s) {
		return apierr.InvalidArgument("%s is not valid UTF-8 (first invalid byte at offset %d)", field, invalidUTF8Offset(s))
	}
	return nil
}

func invalidUTF8Offset(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return i
			}
		}
	}
	return len(s)
}

// printable returns s with invalid UTF-8 replaced, so error messages stay
// valid UTF-8 themselves; protobuf would refuse to encode them otherwise.
func printable(s string) string {
	const maxShown = 80
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxShown {
		return s[:maxShown] + "..."
	}
	return s
}

// SingleConversationID returns the id of the single chat between a and b.
func SingleConversationID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return singlePrefix + a + ":" + b
}

// GroupConversationID returns the id of a group's conversation.
func GroupConversationID(groupID string) string { return groupPrefix + groupID }

// ConversationRef is a parsed conversation id.
type ConversationRef struct {
	ID   string
	Type imlitev1.ConversationType
	// Users holds both users of a single chat, sorted. A self-chat holds one.
	Users []string
	// GroupID is set for group chats.
	GroupID string
}

// ParseConversationID validates id and splits it into its parts.
func ParseConversationID(id string) (ConversationRef, error) {
	switch {
	case id == "":
		return ConversationRef{}, apierr.InvalidArgument("conversation_id is required")
	case strings.HasPrefix(id, groupPrefix):
		gid := id[len(groupPrefix):]
		if err := ValidateID("group id in conversation_id", gid); err != nil {
			return ConversationRef{}, err
		}
		return ConversationRef{ID: id, Type: imlitev1.ConversationType_CONVERSATION_TYPE_GROUP, GroupID: gid}, nil
	case strings.HasPrefix(id, singlePrefix):
		a, b, ok := strings.Cut(id[len(singlePrefix):], ":")
		if !ok {
			return ConversationRef{}, apierr.InvalidArgument("conversation_id %q: a single chat id is s:<user>:<user>", printable(id))
		}
		if err := ValidateID("first user id in conversation_id", a); err != nil {
			return ConversationRef{}, err
		}
		if err := ValidateID("second user id in conversation_id", b); err != nil {
			return ConversationRef{}, err
		}
		if b < a {
			return ConversationRef{}, apierr.InvalidArgument("conversation_id %q: the user ids must be sorted, use %q", id, SingleConversationID(a, b))
		}
		users := []string{a, b}
		if a == b {
			users = users[:1]
		}
		return ConversationRef{ID: id, Type: imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE, Users: users}, nil
	}
	return ConversationRef{}, apierr.InvalidArgument("conversation_id %q must start with \"s:\" (single chat) or \"g:\" (group)", printable(id))
}

// Peer returns the other user of a single chat as seen by userID.
func (r ConversationRef) Peer(userID string) string {
	for _, u := range r.Users {
		if u != userID {
			return u
		}
	}
	return userID
}

func (r ConversationRef) hasUser(userID string) bool {
	for _, u := range r.Users {
		if u == userID {
			return true
		}
	}
	return false
}

func (r ConversationRef) String() string { return fmt.Sprintf("%s (%v)", r.ID, r.Type) }
