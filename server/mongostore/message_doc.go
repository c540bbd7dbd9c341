package mongostore

import (
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// messageDoc is the stored form of imlitev1.Message, with the field names
// of the protobuf message. Empty strings are left out. options and
// offline_push are present exactly when the message has them, even when
// they are empty, so that a message reads back equal to the one stored.
// Unknown protobuf fields are not stored.
type messageDoc struct {
	ID               bson.ObjectID   `bson:"_id,omitempty"`
	ConversationID   string          `bson:"conversation_id"`
	Seq              int64           `bson:"seq"`
	ServerMsgID      string          `bson:"server_msg_id"`
	ClientMsgID      string          `bson:"client_msg_id"`
	SenderID         string          `bson:"sender_id"`
	SenderPlatform   string          `bson:"sender_platform,omitempty"`
	ConversationType int32           `bson:"conversation_type"`
	RecvID           string          `bson:"recv_id,omitempty"`
	GroupID          string          `bson:"group_id,omitempty"`
	ContentType      int32           `bson:"content_type"`
	Content          string          `bson:"content"`
	ClientTime       int64           `bson:"client_time"`
	ServerTime       int64           `bson:"server_time"`
	Options          *optionsDoc     `bson:"options,omitempty"`
	OfflinePush      *offlinePushDoc `bson:"offline_push,omitempty"`
	Ex               string          `bson:"ex,omitempty"`
}

// optionsDoc is imlitev1.MsgOptions. Storage is absent when unset, which
// reads as true.
type optionsDoc struct {
	Storage *bool `bson:"storage,omitempty"`
}

// offlinePushDoc is imlitev1.OfflinePush.
type offlinePushDoc struct {
	Title string `bson:"title,omitempty"`
	Desc  string `bson:"desc,omitempty"`
	Ex    string `bson:"ex,omitempty"`
}

func newMessageDoc(m *imlitev1.Message) messageDoc {
	d := messageDoc{
		ConversationID:   m.GetConversationId(),
		Seq:              m.GetSeq(),
		ServerMsgID:      m.GetServerMsgId(),
		ClientMsgID:      m.GetClientMsgId(),
		SenderID:         m.GetSenderId(),
		SenderPlatform:   m.GetSenderPlatform(),
		ConversationType: int32(m.GetConversationType()),
		RecvID:           m.GetRecvId(),
		GroupID:          m.GetGroupId(),
		ContentType:      m.GetContentType(),
		Content:          m.GetContent(),
		ClientTime:       m.GetClientTime(),
		ServerTime:       m.GetServerTime(),
		Ex:               m.GetEx(),
	}
	if o := m.GetOptions(); o != nil {
		d.Options = &optionsDoc{Storage: o.Storage}
	}
	if p := m.GetOfflinePush(); p != nil {
		d.OfflinePush = &offlinePushDoc{Title: p.GetTitle(), Desc: p.GetDesc(), Ex: p.GetEx()}
	}
	return d
}

func (d *messageDoc) message() *imlitev1.Message {
	m := &imlitev1.Message{
		ServerMsgId:      d.ServerMsgID,
		ClientMsgId:      d.ClientMsgID,
		SenderId:         d.SenderID,
		SenderPlatform:   d.SenderPlatform,
		ConversationId:   d.ConversationID,
		ConversationType: imlitev1.ConversationType(d.ConversationType),
		RecvId:           d.RecvID,
		GroupId:          d.GroupID,
		Seq:              d.Seq,
		ContentType:      d.ContentType,
		Content:          d.Content,
		ClientTime:       d.ClientTime,
		ServerTime:       d.ServerTime,
		Ex:               d.Ex,
	}
	if d.Options != nil {
		m.Options = &imlitev1.MsgOptions{Storage: d.Options.Storage}
	}
	if d.OfflinePush != nil {
		m.OfflinePush = &imlitev1.OfflinePush{Title: d.OfflinePush.Title, Desc: d.OfflinePush.Desc, Ex: d.OfflinePush.Ex}
	}
	return m
}

// decodeMessage decodes the cursor's current document. The error names the
// document's _id, conversation and seq as far as they are readable, so an
// operator can find a document that was edited by hand.
func decodeMessage(cur *mongo.Cursor) (*imlitev1.Message, error) {
	var d messageDoc
	if err := cur.Decode(&d); err != nil {
		return nil, fmt.Errorf("decode message %s: %w", describeRaw(cur.Current), err)
	}
	return d.message(), nil
}

// describeRaw names a raw message document by _id, conversation_id and seq.
func describeRaw(raw bson.Raw) string {
	return fmt.Sprintf("_id %v (conversation_id %v, seq %v)", raw.Lookup("_id"), raw.Lookup("conversation_id"), raw.Lookup("seq"))
}
