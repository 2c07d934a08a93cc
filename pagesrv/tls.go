package pagesrv

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig builds a TLS configuration from PEM files, as CRIU's --tls-cacert,
// --tls-cert and --tls-key do.
//
// Server side: cert and key are required; with cacert, clients must present a
// certificate signed by that CA (mutual authentication). Client side:
// cacert verifies the server (system roots if empty); cert and key, if
// given, are presented to the server.
func TLSConfig(cacert, cert, key string, server bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cert != "" || key != "" {
		if cert == "" || key == "" {
			return nil, errors.New("pagesrv: TLS: certificate and key go together")
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("pagesrv: TLS: load %s/%s: %w", cert, key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	var pool *x509.CertPool
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, fmt.Errorf("pagesrv: TLS: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pagesrv: TLS: no certificate in %s", cacert)
		}
	}
	if server {
		if len(cfg.Certificates) == 0 {
			return nil, errors.New("pagesrv: TLS: a server needs a certificate and key")
		}
		if pool != nil {
			cfg.ClientCAs = pool
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		return cfg, nil
	}
	cfg.RootCAs = pool
	return cfg, nil
}
