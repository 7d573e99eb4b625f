module github.com/securepeer/securepeer

go 1.26.0

require (
	filippo.io/edwards25519 v1.2.0
	github.com/flynn/noise v1.1.0
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
)
