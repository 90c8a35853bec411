package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to a running pdrelay over its operator socket. It is safe
// for concurrent use.
type Client struct {
	path string
	hc   *http.Client
}

// StatusError is an error answer from the relay.
type StatusError struct {
	Code int    // HTTP status
	Msg  string // the relay's message
}

func (e *StatusError) Error() string { return fmt.Sprintf("pdrelay: %s (HTTP %d)", e.Msg, e.Code) }

// Dial returns a client for the socket at socketPath. It does not connect
// until a request is made.
func Dial(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}
	return &Client{path: socketPath, hc: &http.Client{Transport: tr}}
}

// Bindings returns the relay's bindings.
func (c *Client) Bindings(ctx context.Context) ([]BindingJSON, error) {
	var out []BindingJSON
	err := c.do(ctx, http.MethodGet, "/v1/bindings", nil, &out)
	return out, err
}

// Clear clears the bindings req selects; see ClearRequest.
func (c *Client) Clear(ctx context.Context, req ClearRequest) (ClearResponse, error) {
	var out ClearResponse
	body, err := json.Marshal(req)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, http.MethodPost, "/v1/clear", body, &out)
	return out, err
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	// The host is a placeholder: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://pdrelay"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("connect to pdrelay at %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer from pdrelay: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorJSON
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &StatusError{Code: resp.StatusCode, Msg: e.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer from pdrelay: %w", err)
	}
	return nil
}
