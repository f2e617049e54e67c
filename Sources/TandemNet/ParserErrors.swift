import Foundation
import NIOCore
import NIOHTTP1

/// A request the HTTP parser refuses (a malformed request line or header, headers over the size
/// limits, two Content-Lengths) is answered with a problem document, as every other error is,
/// instead of the HTTP layer's empty 400: 431 for headers too large, 400 otherwise; then the
/// connection closes. Only while the connection has delivered no request yet: after one, a
/// response may be under way, and a second head would corrupt it, so the HTTP layer's own
/// answer stands.
final class ParserErrorHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any  // passed on, never unwrapped
    private var delivered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        delivered = true
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, !delivered,
            // Written below the typed codecs, where the parser's own encoder takes NIO's parts.
            let decoder = try? context.pipeline.syncOperations.context(
                handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
        else { return context.fireErrorCaught(error) }
        let problem =
            parserError == .headerOverflow
            ? Problem(
                name: "RequestHeaderFieldsTooLarge", status: 431, detail: "the request's header fields are too large")
            : Problem(name: "BadRequest", status: 400, detail: "the request is not valid HTTP/1.1 (\(parserError))")
        let body = (try? NetworkAPI.encoder.encode(problem)) ?? Data()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/problem+json")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Connection", value: "close")
        let status = HTTPResponseStatus(statusCode: problem.status)
        decoder.write(
            NIOAny(HTTPServerResponsePart.head(.init(version: .http1_1, status: status, headers: headers))),
            promise: nil)
        decoder.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        decoder.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
        context.close(promise: nil)
    }
}
