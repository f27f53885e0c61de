// Command acceptor is Ory Hydra's login and consent app for sessiongate's real-stack tests: it
// accepts every login and consent request without a UI, the way Kratos's own OIDC tests do
// (kratos v1.3.1 selfservice/strategy/oidc/strategy_helper_test.go).
//
//	GET /login?login_challenge=C     -> accept as the login_hint Kratos passed upstream
//	                                    (upstream_parameters.login_hint), else -subject; 302 to Hydra
//	GET /consent?consent_challenge=C -> grant every requested scope and audience, with the email
//	                                    claims in the ID token; 302 to Hydra
//	GET /error                       -> Hydra's error page: 400 with the error parameters as JSON
//	GET /health                      -> 200
//
// Hydra's admin API (v2.3.0, consent/handler.go): GET and PUT .../accept under
// /admin/oauth2/auth/requests/{login,consent}. Standard library only; listens on loopback.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"strings"
	"time"
)

var (
	listen         = flag.String("listen", "127.0.0.1:4446", "address to listen on")
	hydraAdmin     = flag.String("hydra-admin", "http://127.0.0.1:4445", "Hydra's admin API")
	defaultSubject = flag.String("subject", "alice@example.test", "subject when Kratos sends no login_hint")
	client         = &http.Client{Timeout: 10 * time.Second}
)

func main() {
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/login", login)
	mux.HandleFunc("/consent", consent)
	mux.HandleFunc("/error", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"error":             r.URL.Query().Get("error"),
			"error_description": r.URL.Query().Get("error_description"),
			"error_hint":        r.URL.Query().Get("error_hint"),
		})
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	log.Printf("acceptor listening on %s, Hydra admin %s", *listen, *hydraAdmin)
	log.Fatal(http.ListenAndServe(*listen, mux))
}

// admin calls Hydra's admin API and decodes its JSON answer into out.
func admin(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimRight(*hydraAdmin, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}

type redirect struct {
	RedirectTo string `json:"redirect_to"`
}

func fail(w http.ResponseWriter, err error) {
	log.Printf("error: %v", err)
	http.Error(w, err.Error(), http.StatusBadGateway)
}

func login(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("login_challenge")
	q := "?login_challenge=" + url.QueryEscape(challenge)
	var req struct {
		Skip        bool   `json:"skip"`
		Subject     string `json:"subject"`
		OidcContext struct {
			LoginHint string `json:"login_hint"`
		} `json:"oidc_context"`
	}
	if err := admin(http.MethodGet, "/admin/oauth2/auth/requests/login"+q, nil, &req); err != nil {
		fail(w, err)
		return
	}
	subject := *defaultSubject
	if req.Skip && req.Subject != "" {
		subject = req.Subject
	} else if req.OidcContext.LoginHint != "" {
		subject = req.OidcContext.LoginHint
	}
	var to redirect
	body := map[string]any{"subject": subject, "remember": false}
	if err := admin(http.MethodPut, "/admin/oauth2/auth/requests/login/accept"+q, body, &to); err != nil {
		fail(w, err)
		return
	}
	log.Printf("login accepted for %s", subject)
	http.Redirect(w, r, to.RedirectTo, http.StatusFound)
}

func consent(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("consent_challenge")
	q := "?consent_challenge=" + url.QueryEscape(challenge)
	var req struct {
		Subject                      string   `json:"subject"`
		RequestedScope               []string `json:"requested_scope"`
		RequestedAccessTokenAudience []string `json:"requested_access_token_audience"`
	}
	if err := admin(http.MethodGet, "/admin/oauth2/auth/requests/consent"+q, nil, &req); err != nil {
		fail(w, err)
		return
	}
	email := req.Subject
	if !strings.Contains(email, "@") {
		email += "@example.test"
	}
	claims := map[string]any{"email": email, "email_verified": true}
	body := map[string]any{
		"grant_scope":                 req.RequestedScope,
		"grant_access_token_audience": req.RequestedAccessTokenAudience,
		"remember":                    false,
		"session":                     map[string]any{"id_token": claims, "access_token": map[string]any{"email": email}},
	}
	var to redirect
	if err := admin(http.MethodPut, "/admin/oauth2/auth/requests/consent/accept"+q, body, &to); err != nil {
		fail(w, err)
		return
	}
	log.Printf("consent accepted for %s: %v", req.Subject, req.RequestedScope)
	http.Redirect(w, r, to.RedirectTo, http.StatusFound)
}
