package kafkaqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
)

// answerFailedLogins makes the cluster reply to a PLAIN login with a wrong
// password with the error code SASL_AUTHENTICATION_FAILED, as Kafka does.
// kfake itself closes the connection, which a client cannot tell from an
// outage.
func answerFailedLogins(c *kfake.Cluster, user, passwd string) {
	c.ControlKey(kmsg.SASLAuthenticate.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		auth := req.(*kmsg.SASLAuthenticateRequest)
		if string(auth.SASLAuthBytes) == "\x00"+user+"\x00"+passwd {
			return nil, nil, false
		}
		resp := auth.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "invalid credentials"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
}

func TestSASLPlain(t *testing.T) {
	k := testenv.StartKafka(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "imlite", "s3cret"))
	answerFailedLogins(k.Cluster(), "imlite", "s3cret")

	t.Run("valid credentials", func(t *testing.T) {
		msgTopic, pushTopic := uniqueName("msg"), uniqueName("push")
		pcfg := producerConfig(k, msgTopic)
		pcfg.User, pcfg.Passwd = "imlite", "s3cret"
		mp := newMsgProducer(t, pcfg)
		pcfg.Topic = pushTopic
		pp := newPushProducer(t, pcfg)

		ccfg := consumerConfig(k, msgTopic, uniqueName("group"))
		ccfg.User, ccfg.Passwd = "imlite", "s3cret"
		msgs := newReceived()
		mc := newMsgConsumer(t, ccfg)
		runBackground(t, func(ctx context.Context) error { return mc.ConsumeMsgs(ctx, msgs.handleMsgs) })
		ccfg.Topic = pushTopic
		pushes := newReceived()
		pc := newPushConsumer(t, ccfg)
		pb := runBackground(t, func(ctx context.Context) error { return pc.ConsumePush(ctx, pushes.handlePush) })
		waitReady(t, pc, pb)

		if err := mp.PublishMsg(t.Context(), testMsg("c1", "hello")); err != nil {
			t.Fatalf("PublishMsg: %v", err)
		}
		if err := pp.PublishPush(t.Context(), []server.KeyedPush{testPush("c1", "hello")}); err != nil {
			t.Fatalf("PublishPush: %v", err)
		}
		waitFor(t, "the msg and push records", func() bool { return msgs.count() == 1 && pushes.count() == 1 })
	})

	// A rejected login is a configuration fault: no ErrUnavailable, and
	// the consumers stop instead of retrying.
	topic := uniqueName("topic")
	good := producerConfig(k, topic)
	good.User, good.Passwd = "imlite", "s3cret"
	newPushProducer(t, good)
	wrong := func(cfg ConsumerConfig) ConsumerConfig {
		cfg.User, cfg.Passwd = "imlite", "wrong"
		return cfg
	}
	cases := []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{
			name: "producer with wrong password",
			run: func(ctx context.Context) error {
				cfg := good
				cfg.Passwd = "wrong"
				p, err := NewMsgProducer(ctx, cfg)
				if err == nil {
					p.Close()
				}
				return err
			},
		},
		{
			name: "msg consumer with wrong password",
			run: func(ctx context.Context) error {
				return newMsgConsumer(t, wrong(consumerConfig(k, topic, uniqueName("group")))).ConsumeMsgs(ctx, newReceived().handleMsgs)
			},
		},
		{
			name: "push consumer with wrong password",
			run: func(ctx context.Context) error {
				return newPushConsumer(t, wrong(consumerConfig(k, topic, ""))).ConsumePush(ctx, newReceived().handlePush)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			err := tc.run(ctx)
			if !errors.Is(err, kerr.SaslAuthenticationFailed) {
				t.Errorf("got %v, want an error wrapping %v", err, kerr.SaslAuthenticationFailed)
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("got %v, want no server.ErrUnavailable because retrying cannot fix a wrong password", err)
			}
			if ctx.Err() != nil {
				t.Errorf("returned only when ctx ended, want it to stop at the rejected login")
			}
		})
	}

	t.Run("no credentials", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		cfg := producerConfig(k, topic)
		if p, err := NewMsgProducer(ctx, cfg); err == nil {
			p.Close()
			t.Errorf("NewMsgProducer without credentials on a SASL cluster: got nil error, want an error")
		}
	})
}
