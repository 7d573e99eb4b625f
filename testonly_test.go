package securepeer

import (
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
)

// The known-answer vectors need encapsulation derandomized from
// Config.Rand, which only crypto/mlkem's test package offers; production
// code does not import it.
func init() {
	testOnlyEncapsulate = func(ek *mlkem.EncapsulationKey768, m []byte) ([]byte, []byte, error) {
		return mlkemtest.Encapsulate768(ek, m)
	}
}
