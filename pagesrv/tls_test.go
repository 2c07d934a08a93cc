package pagesrv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki is a throwaway CA with server and client certificates, as PEM files.
type pki struct {
	dir                   string
	caCert                string
	serverCert, serverKey string
	clientCert, clientKey string
	rogueCert, rogueKey   string // client cert from another CA
	caKeyObj              *ecdsa.PrivateKey
	caObj                 *x509.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	caKey, caDER := makeCert(t, "test CA", nil, nil, true, nil)
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p.caKeyObj, p.caObj = caKey, caCert
	p.caCert = p.writePEM(t, "ca.pem", "CERTIFICATE", caDER)

	sKey, sDER := makeCert(t, "server", caCert, caKey, false, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.serverCert = p.writePEM(t, "server.pem", "CERTIFICATE", sDER)
	p.serverKey = p.writeKey(t, "server.key", sKey)

	cKey, cDER := makeCert(t, "client", caCert, caKey, false, nil)
	p.clientCert = p.writePEM(t, "client.pem", "CERTIFICATE", cDER)
	p.clientKey = p.writeKey(t, "client.key", cKey)

	rogueCAKey, rogueCADER := makeCert(t, "rogue CA", nil, nil, true, nil)
	rogueCA, _ := x509.ParseCertificate(rogueCADER)
	rKey, rDER := makeCert(t, "rogue", rogueCA, rogueCAKey, false, nil)
	p.rogueCert = p.writePEM(t, "rogue.pem", "CERTIFICATE", rDER)
	p.rogueKey = p.writeKey(t, "rogue.key", rKey)
	return p
}

func makeCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, ips []net.IP) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func (p *pki) writePEM(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *pki) writeKey(t *testing.T, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.writePEM(t, name, "EC PRIVATE KEY", der)
}

func (p *pki) serverConfig(t *testing.T) *tls.Config {
	t.Helper()
	cfg, err := TLSConfig(p.caCert, p.serverCert, p.serverKey, true)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (p *pki) clientConfig(t *testing.T, cert, key string) *tls.Config {
	t.Helper()
	cfg, err := TLSConfig(p.caCert, cert, key, false)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestTLSClientCerts(t *testing.T) {
	p := newPKI(t)
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src, TLS: p.serverConfig(t)})

	// A valid client certificate: pages flow.
	c := dialT(t, ts.port, ClientOptions{TLS: p.clientConfig(t, p.clientCert, p.clientKey)})
	dst := make([]byte, pg(1024))
	if err := c.ReadPages(100, base+pg(1000), dst); err != nil {
		t.Fatal(err)
	}
	checkPages(t, src, 100, base+pg(1000), dst)

	for _, tc := range []struct {
		name      string
		cert, key string
	}{
		{"no client cert", "", ""},
		{"cert of another CA", p.rogueCert, p.rogueKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			bad, err := DialOptions(ctx, ClientOptions{Address: "127.0.0.1", Port: ts.port, TLS: p.clientConfig(t, tc.cert, tc.key)})
			if err == nil {
				bad.Close()
				t.Fatal("session opened without a valid client certificate")
			}
			ts.errs.waitMatch(t, "TLS handshake", func(err error) bool {
				var ce *ConnError
				return errors.As(err, &ce) && strings.Contains(err.Error(), "TLS handshake")
			})
		})
	}

	// A client that does not trust the server's CA refuses it.
	cfg := &tls.Config{RootCAs: x509.NewCertPool()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if bad, err := DialOptions(ctx, ClientOptions{Address: "127.0.0.1", Port: ts.port, TLS: cfg}); err == nil {
		bad.Close()
		t.Fatal("client accepted an unknown server")
	}

	// The good session is unaffected.
	if err := c.ReadPages(100, base, make([]byte, pg(10))); err != nil {
		t.Fatal(err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	if _, err := TLSConfig(p.caCert, "", "", true); err == nil {
		t.Error("server config without certificate accepted")
	}
	if _, err := TLSConfig("", p.clientCert, "", false); err == nil {
		t.Error("certificate without key accepted")
	}
	if _, err := TLSConfig(p.serverKey, "", "", false); err == nil {
		t.Error("a key file accepted as CA certificate")
	}
	cfg, err := TLSConfig(p.caCert, p.serverCert, p.serverKey, true)
	if err != nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		t.Errorf("server config %v: client auth %v", err, cfg.ClientAuth)
	}
}

// TestTLSHandshakeStall: a peer that connects and says nothing, and one that
// speaks the protocol without TLS, are dropped at the handshake while a good
// client keeps being served.
func TestTLSHandshakeStall(t *testing.T) {
	p := newPKI(t)
	src := newFakeSource(testExtents())
	ts := startServer(t, ServerOptions{Source: src, TLS: p.serverConfig(t), Timeout: 300 * time.Millisecond})
	c := dialT(t, ts.port, ClientOptions{TLS: p.clientConfig(t, p.clientCert, p.clientKey)})

	silent := dialRaw(t, ts.port)
	ts.errs.waitMatch(t, "handshake deadline", func(err error) bool {
		return strings.Contains(err.Error(), "TLS handshake") && errors.Is(err, os.ErrDeadlineExceeded)
	})
	silent.expectEOF(t)

	plain := dialRaw(t, ts.port)
	plain.send(t, 1, MsgHello{PageSize: uint32(pageSize)})
	ts.errs.waitMatch(t, "TLS handshake", func(err error) bool { return strings.Contains(err.Error(), "TLS handshake") })
	plain.expectEOF(t)

	dst := make([]byte, pg(1000))
	if err := c.ReadPages(100, base+pg(1000), dst); err != nil {
		t.Fatal(err)
	}
	checkPages(t, src, 100, base+pg(1000), dst)
}
