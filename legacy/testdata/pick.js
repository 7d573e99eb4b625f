// pick.js: reads a JSON array of {"Xs": [...], "Ys": [...]} on stdin and
// prints the JSON array of what secure-peer 0.2.1's lib/pick_cipher.js
// returns for each pair (TestPickCipherMatchesNode).
var pick = require('secure-peer/lib/pick_cipher');
var input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', function (s) { input += s; });
process.stdin.on('end', function () {
    var pairs = JSON.parse(input);
    process.stdout.write(JSON.stringify(pairs.map(function (p) {
        return pick(p.Xs || [], p.Ys || []);
    })) + '\n');
});
