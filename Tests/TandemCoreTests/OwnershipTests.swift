import TandemCore
import Testing

/// Who may renew or release a lease (`Caller.owns`), case by case.
@Suite struct LeaseOwnership {
    func lease(uid: UInt32? = nil, token: String? = nil) -> Lease {
        Lease(
            id: "l", feature: "cad", client: "ws", count: 1, uid: uid, token: token, requestId: nil, acquiredUSec: 0,
            expiresUSec: 1, ttlUSec: 1, epoch: 0)
    }

    @Test func eachCallerOwnsWhatItTook() {
        let farm = Caller.networkClient(token: "farm"), render = Caller.networkClient(token: "render")
        let alice = Caller(uid: 1000, isAdmin: false), bob = Caller(uid: 1001, isAdmin: false)
        #expect(farm.owns(lease(token: "farm")) && !render.owns(lease(token: "farm")))
        #expect(!Caller.networkClient.owns(lease(token: "farm")), "a tokenless client on another token's lease")
        // Taken with no token (no tokens then, or before tokens had names): any network client's.
        #expect(farm.owns(lease()) && Caller.networkClient.owns(lease()))
        #expect(alice.owns(lease(uid: 1000)) && !bob.owns(lease(uid: 1000)))
        #expect(!alice.owns(lease()) && !farm.owns(lease(uid: 1000)), "D-Bus and network leases stay apart")
        #expect(Caller.root.owns(lease(token: "farm")) && Caller.root.owns(lease(uid: 1000)))
    }
}
