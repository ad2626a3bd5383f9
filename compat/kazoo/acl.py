#!/usr/bin/python3
"""ACLs: digest ACLs from make_digest_acl + add_auth, NoAuth on
read/write/children/getACL, exists needing no permission, wrong password,
world:anyone read-only, CREATE/DELETE permission on the parent, the `auth`
scheme, masked digest ids without ADMIN, InvalidACL."""
import base64
import hashlib

from kazoo.exceptions import BadVersionError, InvalidACLError, NoAuthError
from kazoo.security import (ACL, OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, Id, Permissions, make_acl,
                            make_digest_acl, make_digest_acl_credential)

from kzcompat import check, client, eq, raises, root, run


def acl_tuples(acls):
    return sorted((a.perms, a.id.scheme, a.id.id) for a in acls)


def main():
    owner = client(auth_data=[("digest", "alice:secret")])
    anon = client()
    base = root("acl")
    owner.create(base)

    cred = make_digest_acl_credential("alice", "secret")
    want_hash = base64.b64encode(hashlib.sha1(b"alice:secret").digest()).decode()
    eq(cred, "alice:" + want_hash, "digest credential")

    # digest ACL, all permissions for alice only
    p = base + "/private"
    owner.create(p, b"top secret", acl=[make_digest_acl("alice", "secret", all=True)])
    anon.sync(p)
    st = anon.exists(p)  # exists needs no permission
    check(st is not None, "exists on a node without permissions")
    eq(st.aversion, 0, "aversion")
    raises(NoAuthError, anon.get, p)
    raises(NoAuthError, anon.set, p, b"x")
    raises(NoAuthError, anon.get_children, p)
    raises(NoAuthError, anon.get_acls, p)
    raises(NoAuthError, anon.create, p + "/child")
    raises(NoAuthError, anon.set_acls, p, OPEN_ACL_UNSAFE)
    eq(owner.get(p)[0], b"top secret", "owner reads")
    acls, _ = owner.get_acls(p)
    eq(acl_tuples(acls), [(31, "digest", cred)], "get_acls by the owner shows the hashed id")

    # a wrong password authenticates (digest accepts anything) but grants nothing
    anon.add_auth("digest", "alice:wrong")
    raises(NoAuthError, anon.get, p)
    # the right one grants access on the same session
    anon.add_auth("digest", "alice:secret")
    eq(anon.get(p)[0], b"top secret", "read after add_auth")
    anon.set(p, b"changed")
    owner.sync(p)
    eq(owner.get(p)[0], b"changed", "write by the second authenticated session")

    # world:anyone read-only
    bob = client()
    ro = base + "/readonly"
    owner.create(ro, b"r", acl=READ_ACL_UNSAFE)
    bob.sync(ro)
    eq(bob.get(ro)[0], b"r", "world-readable get")
    eq(bob.get_children(ro), [], "world-readable get_children")
    raises(NoAuthError, bob.set, ro, b"x")
    raises(NoAuthError, bob.create, ro + "/c")
    raises(NoAuthError, owner.set, ro, b"x")  # nobody has WRITE
    eq(acl_tuples(bob.get_acls(ro)[0]), [(1, "world", "anyone")], "get_acls of a read-only node")

    # CREATE / DELETE permissions live on the parent
    cp = base + "/createonly"
    owner.create(cp, acl=[make_acl("world", "anyone", read=True, create=True)])
    bob.sync(cp)
    bob.create(cp + "/kid")
    raises(NoAuthError, bob.delete, cp + "/kid")
    dp = base + "/deleteonly"
    owner.create(dp, acl=[make_acl("world", "anyone", all=True)])
    owner.create(dp + "/kid")
    owner.set_acls(dp, [make_acl("world", "anyone", read=True, delete=True)])
    bob.sync(dp)
    raises(NoAuthError, bob.create, dp + "/kid2")
    bob.delete(dp + "/kid")

    # set_acls needs ADMIN (checked before the version)
    raises(NoAuthError, owner.set_acls, dp, OPEN_ACL_UNSAFE, version=5)
    raises(NoAuthError, owner.set_acls, dp, OPEN_ACL_UNSAFE, version=1)
    # set_acls: version check and aversion
    vp = base + "/versioned"
    owner.create(vp)
    owner.set_acls(vp, OPEN_ACL_UNSAFE, version=0)
    raises(BadVersionError, owner.set_acls, vp, OPEN_ACL_UNSAFE, version=0)
    st = owner.set_acls(vp, READ_ACL_UNSAFE, version=1)
    eq((st.aversion, st.version), (2, 0), "aversion and version after two set_acls")
    raises(NoAuthError, owner.set_acls, vp, OPEN_ACL_UNSAFE)  # READ only now

    # the auth scheme expands to the session's authenticated ids
    ap = base + "/authscheme"
    owner.create(ap, b"a", acl=[ACL(Permissions.ALL, Id("auth", ""))])
    eq(acl_tuples(owner.get_acls(ap)[0]), [(31, "digest", cred)], "auth scheme expanded to digest id")
    bob.sync(ap)
    raises(NoAuthError, bob.get, ap)
    # ... which is invalid without any authenticated id
    raises(InvalidACLError, bob.create, base + "/noauthids", acl=[ACL(Permissions.ALL, Id("auth", ""))])

    # digest ids are masked for a reader without ADMIN
    mp = base + "/masked"
    owner.create(mp, b"m", acl=[make_digest_acl("alice", "secret", all=True),
                                ACL(Permissions.READ, Id("world", "anyone"))])
    bob.sync(mp)
    eq(bob.get(mp)[0], b"m", "world READ on a mixed ACL")
    eq(acl_tuples(bob.get_acls(mp)[0]), [(1, "world", "anyone"), (31, "digest", "alice:x")],
       "get_acls without ADMIN masks digest ids")
    eq(acl_tuples(owner.get_acls(mp)[0]), [(1, "world", "anyone"), (31, "digest", cred)],
       "get_acls with ADMIN shows digest ids")

    # invalid ACLs
    raises(InvalidACLError, owner.create, base + "/bad1", acl=[ACL(Permissions.ALL, Id("nosuchscheme", "x"))])
    raises(InvalidACLError, owner.create, base + "/bad2", acl=[ACL(Permissions.ALL, Id("digest", "nocolon"))])
    eq(owner.exists(base + "/bad1"), None, "node with an invalid ACL")

    # ip scheme
    ip = base + "/iponly"
    owner.create(ip, b"i", acl=[make_acl("ip", "127.0.0.1", all=True)])
    bob.sync(ip)
    eq(bob.get(ip)[0], b"i", "ip:127.0.0.1 ACL grants a loopback client")
    ip2 = base + "/otherip"
    owner.create(ip2, b"i", acl=[make_acl("ip", "10.1.2.3", all=True)])
    bob.sync(ip2)
    raises(NoAuthError, bob.get, ip2)

    # (no cleanup: createonly/kid can never be deleted without a super user)


run(main)
