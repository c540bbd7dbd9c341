package apierr

import (
	"errors"
	"testing"
)

func TestDecodeErrorTextPlainSpaces(t *testing.T) {
	err := errors.New("proto:\u00a0syntax error (line 1:2): unexpected token")
	want := "proto: syntax error (line 1:2): unexpected token"
	if got := DecodeErrorText(err); got != want {
		t.Errorf("DecodeErrorText = %q, want %q", got, want)
	}
}
