import Foundation
import Hummingbird
import TandemAPI
import TandemCore

/// RFC 9457 problem details (the wire type is shared with the client).
public typealias Problem = ProblemBody

extension ProblemBody {
    public init(_ error: TandemError) {
        self.init(name: error.code.rawValue, status: Self.status(for: error.code), detail: error.message)
        servingAddress = error.servingAddress
    }

    public static func status(for code: TandemErrorCode) -> Int {
        switch code {
        case .insufficientSeats, .licenseInUse, .seatsReserved, .licensesActive, .licenseAlreadyActive: return 409
        case .unknownFeature, .leaseNotFound, .licenseNotFound, .reservationNotFound: return 404
        case .invalidArgs, .invalidLicense, .wrongServer, .licenseExpired: return 400
        case .accessDenied: return 403
        case .notServing: return 503
        case .notPrimary, .serverIdUsed, .peerNotPrepared, .pairState: return 409
        case .peerUnreachable: return 502
        case .failed: return 500
        }
    }

    static let unauthorized = Problem(
        name: "Unauthorized", status: 401, detail: "a valid 'Authorization: Bearer <token>' header is required")
    static let tooLarge = Problem(name: "PayloadTooLarge", status: 413, detail: "request body is larger than 64 KiB")

    func response() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        if status == 401 { headers[.wwwAuthenticate] = "Bearer" }
        let data = (try? NetworkAPI.encoder.encode(self)) ?? Data()
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
