package sserelay

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// servePublish is the POST path: channels, authorization, the payload,
// then one publish through the broker, so subscribers on every node get
// it. The origin was checked by ServeHTTP.
func (h *Handler) servePublish(w http.ResponseWriter, r *http.Request) error {
	channels, err := h.requestChannels(r)
	if err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return nil
	}
	if len(channels) == 0 {
		refuse(w, http.StatusBadRequest, "no channel: use /<route>/<channel> or ?channel=")
		return nil
	}
	if err := h.authorizePublish(r, channels); err != nil {
		h.refuseAuth(w, err)
		return nil
	}
	limit := h.relay.broker.Limits().MaxPayload
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			refuse(w, http.StatusRequestEntityTooLarge, "payload over the broker's limit of "+strconv.Itoa(limit)+" bytes")
			return nil
		}
		refuse(w, http.StatusBadRequest, "reading body: "+err.Error())
		return nil
	}
	if _, err := hub.Decode(body); err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return nil
	}
	// Every channel, or none: a 202 means all of them got the event.
	if err := h.relay.broker.Publish(r.Context(), h.rules.onBroker(channels), body); err != nil {
		if errors.Is(err, broker.ErrRejected) {
			refuse(w, http.StatusBadRequest, err.Error())
			return nil
		}
		h.logger.Warn("publish failed", zap.Strings("channels", channels), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable, "broker unavailable")
		return nil
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
