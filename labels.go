package securepeer

// Domain-separation labels. Each is used for exactly one purpose, and all
// begin with "securepeer v1" so that nothing signed or derived here can be
// mistaken for anything of another protocol or version (PROTOCOL.md, "Labels").
const (
	labelStaticKey = "securepeer v1 noise static key"
	labelStaticSig = "securepeer v1 static key signature\x00"
)
