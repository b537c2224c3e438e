// Package webui is sluice's review interface: the journal's decisions,
// newest first and live, and turning a refusal into a reviewed policy
// change. It serves HTML rendered on the server (every string from an
// agent as text, never markup), a little plain JavaScript, and the JSON
// API the pages and scripts use. It reads the journal and steers the
// policy through two small interfaces; it never touches the kernel or
// the agents.
package webui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/sluicegw/sluice/journal"
	"github.com/sluicegw/sluice/policy"
)

// Journal is what the UI reads: a journal.Reader (or a Store).
type Journal interface {
	List(ctx context.Context, f journal.Filter) ([]journal.Record, int64, error)
	After(ctx context.Context, id int64, limit int) ([]journal.Record, error)
	Get(ctx context.Context, id int64) (journal.Record, error)
	Last(ctx context.Context) (int64, error)
}

// Control steers the policy in force: a running gateway.
type Control interface {
	PolicyView() policy.View
	Propose(allow, duration string) (policy.Proposal, error)
	Confirm(id, who string) (string, error)
}

// Config is what a Server serves.
type Config struct {
	Journal Journal
	// Changed, if set, returns a channel closed when records are added;
	// the live view polls without it.
	Changed func() <-chan struct{}
	// Control steers the policy; nil serves the journal alone, read-only.
	Control Control
	// Durations are the choices of the allow dialog.
	Durations []string
	// Token authenticates; a random one when empty.
	Token string
	// Prefix is the path the UI is served under ("/ui-RANDOM/" when
	// empty): the session cookie is sent under it only. A browser sends
	// a cookie to every port of a host, so without a prefix another
	// server on the same address that the browser visits would get the
	// session; it cannot guess the prefix.
	Prefix string
	Log    *slog.Logger
}

// Server is the web UI. Its Handler is safe for concurrent use.
type Server struct {
	cfg   Config
	token string
	pages *template.Template
	files http.Handler

	mu       sync.Mutex
	sessions map[string]*session
	streams  int // live event streams
}

// maxStreams bounds the live event streams at once.
const maxStreams = 32

type session struct {
	csrf    string
	expires time.Time
}

// sessionLife is how long a browser stays logged in without coming back.
const sessionLife = 12 * time.Hour

const cookieName = "sluice_session"

//go:embed templates/*.html static/*
var assets embed.FS

// New makes a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Journal == nil {
		return nil, errors.New("webui: no journal")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, token: cfg.Token, sessions: map[string]*session{}}
	if s.token == "" {
		s.token = randomHex(16)
	}
	if s.cfg.Prefix == "" {
		s.cfg.Prefix = "/ui-" + randomHex(8) + "/"
	}
	if !strings.HasPrefix(s.cfg.Prefix, "/") || !strings.HasSuffix(s.cfg.Prefix, "/") {
		return nil, errors.New("webui: the prefix must start and end with '/'")
	}
	var err error
	s.pages, err = template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	s.files = http.StripPrefix("/static/", http.FileServerFS(static))
	return s, nil
}

// Token is what authenticates: in the login URL, or as a Bearer token.
func (s *Server) Token() string { return s.token }

// LoginURL is the URL that logs a browser in, for the UI at addr.
func (s *Server) LoginURL(addr string) string {
	return "http://" + addr + s.cfg.Prefix + "?token=" + url.QueryEscape(s.token)
}

// base is the prefix without its final '/', to put before a path.
func (s *Server) base() string { return strings.TrimSuffix(s.cfg.Prefix, "/") }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Handler serves the UI: pages, API and static files, behind the token.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.listPage)
	mux.HandleFunc("GET /hosts", s.hostsPage)
	mux.HandleFunc("GET /events/{id}", s.eventPage)
	mux.HandleFunc("GET /policy", s.policyPage)
	mux.HandleFunc("POST /allow", s.allowForm)
	mux.HandleFunc("POST /proposals/{id}/confirm", s.confirmForm)
	mux.HandleFunc("GET /api/events", s.apiEvents)
	mux.HandleFunc("GET /api/events/stream", s.apiStream)
	mux.HandleFunc("GET /api/events/{id}", s.apiEvent)
	mux.HandleFunc("GET /api/policy", s.apiPolicy)
	mux.HandleFunc("POST /api/allow", s.apiAllow)
	mux.HandleFunc("POST /api/proposals/{id}/confirm", s.apiConfirm)
	inner := s.secure(mux)
	if s.cfg.Prefix == "/" {
		return inner
	}
	outer := http.NewServeMux()
	outer.Handle(s.cfg.Prefix, http.StripPrefix(s.base(), inner))
	// Outside the prefix there is nothing, for anyone.
	outer.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.NotFound(w, r)
	}))
	return outer
}

// who says who is asking, for the journal: a browser session or the
// token.
type ctxKey struct{}

// secure sets the headers every answer carries, serves the static files,
// logs a browser in from the token in the URL, and lets through only
// requests with a valid token or session (and, for a change made with
// the session's cookie, the session's CSRF token).
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer a browser sends
		// "Origin: null" with its own form posts, which sameOrigin refuses.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if strings.HasPrefix(r.URL.Path, "/static/") && r.Method == http.MethodGet {
			s.files.ServeHTTP(w, r)
			return
		}
		if tok := r.URL.Query().Get("token"); tok != "" {
			s.login(w, r, tok)
			return
		}
		if auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			if !s.validToken(auth) {
				http.Error(w, "invalid token", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, &who{name: "API token"})))
			return
		}
		id, sess := s.session(r)
		if sess == nil {
			http.Error(w, "not logged in: open the URL sluice printed when it started (http://ADDR/ui-.../?token=...)", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !sameOrigin(r) || !s.validCSRF(r, sess) {
				http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, &who{name: "UI session " + id[:8], csrf: sess.csrf})))
	})
}

type who struct {
	name string
	csrf string // "" for the token
}

func whoOf(r *http.Request) *who {
	if w, ok := r.Context().Value(ctxKey{}).(*who); ok {
		return w
	}
	return &who{name: "unknown"}
}

func (s *Server) validToken(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) == 1
}

// login starts a session for the token in the URL and sends the browser
// to the same URL without it, so that the token leaves the address bar
// and the history.
func (s *Server) login(w http.ResponseWriter, r *http.Request, tok string) {
	if !s.validToken(tok) {
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	}
	id := randomHex(32)
	s.mu.Lock()
	now := time.Now()
	for k, v := range s.sessions {
		if now.After(v.expires) {
			delete(s.sessions, k)
		}
	}
	s.sessions[id] = &session{csrf: randomHex(16), expires: now.Add(sessionLife)}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: s.cfg.Prefix, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionLife / time.Second)})
	q := r.URL.Query()
	q.Del("token")
	// The path alone, made absolute and clean: "//host/" would send the
	// browser elsewhere.
	to := s.base() + path.Clean("/"+r.URL.Path)
	if len(q) > 0 {
		to += "?" + q.Encode()
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func (s *Server) session(r *http.Request) (string, *session) {
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) != 64 {
		return "", nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[c.Value]
	if !ok || time.Now().After(sess.expires) {
		return "", nil
	}
	sess.expires = time.Now().Add(sessionLife)
	return c.Value, sess
}

func (s *Server) validCSRF(r *http.Request, sess *session) bool {
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		tok = r.PostFormValue("csrf")
	}
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) == 1
}

// sameOrigin refuses a request whose Origin (sent by browsers with every
// POST) is not this server.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// Listen serves the UI on addr, in the background, and returns the URL
// that logs a browser in and a function that stops serving.
func (s *Server) Listen(addr string) (login string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("web UI: %w", err)
	}
	// Idle connections close, so that a client that never logs in cannot
	// hold the gateway's descriptors.
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error("web UI stopped", "err", err)
		}
	}()
	return s.LoginURL(ln.Addr().String()), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // live streams end with the process
	}, nil
}
