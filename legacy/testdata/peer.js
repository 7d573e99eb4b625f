// peer.js: one secure-peer 0.2.1 peer for the Go interop tests
// (interop_test.go). It takes one TCP connection, reports what happens as
// JSON lines on stdout, and exits when the connection closes.
//
// Environment:
//   SP_MODE     "listen" (on 127.0.0.1, a random port, reported as
//               {"event":"listening","port":N}) or "connect"
//   SP_PORT     the port to connect to (connect mode)
//   SP_KEYS     the rsa-json key file
//   SP_CIPHERS  comma-separated preference list; unset for the module default
//   SP_EXPECT   if set, a PEM public key file: any other peer key is rejected
//   SP_REJECT   "1" to reject every peer key
//   SP_ACTION   "echo" (send back every chunk, end after the peer ends) or
//               "source" (send SP_SOURCE in SP_CHUNK-byte writes, then end)
//   SP_SOURCE   the file to send in source mode
//   SP_CHUNK    write size in source mode (default 65536)
//
// Events: listening, identify {cipher, key}, connection, end {bytes, sha256
// of all plaintext received}, clientError, socketError, close.
var net = require('net');
var fs = require('fs');
var crypto = require('crypto');
var secure = require('secure-peer');

function emit(ev) { process.stdout.write(JSON.stringify(ev) + '\n'); }

var env = process.env;
var keys = JSON.parse(fs.readFileSync(env.SP_KEYS, 'utf8'));
var opts = {};
if (env.SP_CIPHERS) opts.ciphers = env.SP_CIPHERS.split(',');
var expect = env.SP_EXPECT
    ? crypto.createPublicKey(fs.readFileSync(env.SP_EXPECT, 'utf8')).export({ type: 'spki', format: 'der' })
    : null;

var peer = secure(keys, opts);

function run(socket) {
    socket.on('error', function (err) { emit({ event: 'socketError', error: err.code || String(err) }); });
    var sec = peer(function (stream) {
        emit({ event: 'connection' });
        var hash = crypto.createHash('sha256');
        var bytes = 0;
        stream.on('data', function (buf) {
            hash.update(buf);
            bytes += buf.length;
        });
        stream.on('end', function () {
            emit({ event: 'end', bytes: bytes, sha256: hash.digest('hex') });
        });
        if (env.SP_ACTION === 'echo') {
            stream.pipe(stream);
        } else if (env.SP_ACTION === 'source') {
            var data = fs.readFileSync(env.SP_SOURCE);
            var size = Number(env.SP_CHUNK || 65536);
            for (var i = 0; i < data.length; i += size) stream.write(data.slice(i, i + size));
            stream.end();
        } else {
            throw new Error('unknown SP_ACTION ' + env.SP_ACTION);
        }
    });
    sec.on('identify', function (id) {
        emit({ event: 'identify', cipher: id.cipher, key: id.key.public });
        var der = crypto.createPublicKey(id.key.public).export({ type: 'spki', format: 'der' });
        if (env.SP_REJECT === '1' || (expect && !der.equals(expect))) id.reject();
        else id.accept();
    });
    sec.on('clientError', function (err) { emit({ event: 'clientError', error: String(err.message) }); });
    sec.on('close', function () { emit({ event: 'close' }); });
    sec.pipe(socket).pipe(sec);
}

if (env.SP_MODE === 'listen') {
    var server = net.createServer(function (socket) {
        server.close();
        run(socket);
    });
    server.listen(0, '127.0.0.1', function () {
        emit({ event: 'listening', port: server.address().port });
    });
} else if (env.SP_MODE === 'connect') {
    run(net.connect(Number(env.SP_PORT), '127.0.0.1'));
} else {
    throw new Error('unknown SP_MODE ' + env.SP_MODE);
}
