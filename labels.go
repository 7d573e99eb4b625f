package securepeer

// Domain-separation labels. Each is used for exactly one purpose, and all
// begin with "securepeer v1" so that nothing signed or derived here can be
// mistaken for anything of another protocol or version (PROTOCOL.md, "Labels").
const (
	labelStaticKey      = "securepeer v1 noise static key"
	labelStaticSig      = "securepeer v1 static key signature\x00"
	labelStaticSigUntil = "securepeer v1 static key signature until\x00"
)

// Labels of the key schedule (PROTOCOL.md, "Key schedule").
const (
	labelPrologue       = "securepeer v1 prologue\x00"
	labelTrafficI2R     = "securepeer v1 traffic initiator to responder"
	labelTrafficR2I     = "securepeer v1 traffic responder to initiator"
	labelChannelBinding = "securepeer v1 channel binding"
	labelRekey          = "securepeer v1 rekey"
	labelResumption     = "securepeer v1 resumption"
)

// Labels of session resumption (PROTOCOL.md, "Session resumption").
const (
	labelResumePrologue = "securepeer v1 resumption prologue\x00"
	labelFinished       = "securepeer v1 resumption finished"
	labelTicketKeyName  = "securepeer v1 ticket key name"
	labelTicketKey      = "securepeer v1 ticket key"
)
