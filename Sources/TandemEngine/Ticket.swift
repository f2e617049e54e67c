import TandemCore

/// A submitted command: what was decided at once, and the final answer once it is known.
/// A change is answered when it is durable here (and, while paired, acknowledged by the pair),
/// or refused after all when this node stopped serving first. A refusal is answered at once.
public final class Ticket {
    /// The decision made on submission: the outcome the command will have once answered, or
    /// the refusal.
    public let decision: Result<Outcome, TandemError>
    /// The final answer, once known.
    public private(set) var answer: Result<Outcome, TandemError>?
    private var waiting: [(Result<Outcome, TandemError>) -> Void] = []
    /// The engine's own bookkeeping, run after the callers' callbacks (so that a caller's reply
    /// goes out before the replies of reads that waited for it).
    var afterAnswer: (() -> Void)?

    init(decision: Result<Outcome, TandemError>) {
        self.decision = decision
        if case .failure = decision { answer = decision }
    }

    /// Runs `body` with the final answer (at once if it is known).
    public func whenAnswered(_ body: @escaping (Result<Outcome, TandemError>) -> Void) {
        if let answer { body(answer) } else { waiting.append(body) }
    }

    func finish(_ result: Result<Outcome, TandemError>) {
        guard answer == nil else { return }
        answer = result
        let callbacks = waiting
        waiting = []
        for body in callbacks { body(result) }
        let after = afterAnswer
        afterAnswer = nil
        after?()
    }

    /// An acquisition that waits for a seat: answered later, with what its wait comes to.
    static func waiting() -> Ticket { Ticket(decision: .success(.waiting)) }

    func finish() {
        if case .success = decision { finish(decision) }
    }
}
