// The front door's login sessions (njs, Debian's libnginx-mod-http-js): the password is checked
// once per login, not on every request.
//
// nginx checks basic auth with bcrypt; at cost 10 that is ~80 ms of CPU per request, and the UI's
// first page load alone makes dozens of requests. So a request that passed basic auth gets a
// cookie  agentforge_session=<expiry>.<HMAC-SHA256(key, "<expiry>.<user>")>.<user>  and a request
// with a valid one skips basic auth (agentforge-proxy's nginx.conf: `auth_basic` is `off` when
// $session_user is set). The key is 32 random bytes made at every start of the front door
// (/tmp/nginx/session.key, a tmpfs): restarting it — which a changed login needs anyway — ends
// every session, and browsers log in again with the credentials they hold.
//
//   $session_user    the user of a valid session cookie, or ""
//   $session_cookie  a Set-Cookie value for a request that passed basic auth, or ""
//   $upstream_cookies the request's Cookie header without the session cookie
//   $session_seconds (js_var) how long a session lasts
var fs = require('fs');
var crypto = require('crypto');

var COOKIE = 'agentforge_session';
var KEY_FILE = '/tmp/nginx/session.key';
var NAME = /^[A-Za-z0-9_.@-]+$/;

function sign(payload) {
    var key = fs.readFileSync(KEY_FILE, 'utf8').trim();
    return crypto.createHmac('sha256', key).update(payload).digest('hex');
}

function same(a, b) {  // constant-time comparison of two hex strings
    if (a.length !== b.length) {
        return false;
    }
    var diff = 0;
    for (var i = 0; i < a.length; i++) {
        diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
    }
    return diff === 0;
}

function user(r) {
    var value = r.variables['cookie_' + COOKIE];
    if (!value) {
        return '';
    }
    var parts = value.split('.');
    if (parts.length < 3) {
        return '';
    }
    var expiry = parts[0];
    var mac = parts[1];
    var name = parts.slice(2).join('.');
    if (!/^[0-9]{1,12}$/.test(expiry) || !/^[0-9a-f]{64}$/.test(mac) || !NAME.test(name)) {
        return '';
    }
    if (Number(expiry) <= Date.now() / 1000) {
        return '';
    }
    return same(mac, sign(expiry + '.' + name)) ? name : '';
}

function cookie(r) {
    // Only a response to a request that passed basic auth: no valid session (so auth_basic was
    // on), a user name, and not an error (a 401 never gets here with a name that was checked).
    if (r.status >= 400 || user(r) !== '') {
        return '';
    }
    var name = r.variables.remote_user;
    if (!name || !NAME.test(name)) {
        return '';
    }
    var seconds = Number(r.variables.session_seconds) || 43200;
    var expiry = String(Math.floor(Date.now() / 1000) + seconds);
    var value = expiry + '.' + sign(expiry + '.' + name) + '.' + name;
    return COOKIE + '=' + value + '; Path=/; Max-Age=' + seconds
        + '; Secure; HttpOnly; SameSite=Strict';
}

function upstream_cookies(r) {  // the Cookie header without the session: it stays here
    var header = r.headersIn.Cookie;
    if (!header) {
        return '';
    }
    return header.split(';').filter(function (part) {
        return part.trim().split('=')[0] !== COOKIE;
    }).join(';').trim();
}

export default {user, cookie, upstream_cookies};
