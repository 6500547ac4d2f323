/// A trained task model as `scripts/train_tasks.py` exports it (cortexcore's
/// `SequenceClassifier`): token embedding → memory stack → linear head on the last step.
///
/// Directory: `model/` (the stack), `head.safetensors` (`embed.weight [V, d]`,
/// `classifier.weight [C, d]`, `classifier.bias [C]`), `task.json` (task, parameters,
/// PyTorch's test accuracy) and optionally `testset.safetensors` (`tokens [N, T]`,
/// `labels [N]`, PyTorch's `logits [N, C]`).
public final class TaskClassifier: @unchecked Sendable {
    public let task: SyntheticTask
    public let description: JSON  // task.json
    public let model: Model
    let embedding: Tensor
    let head: Linear

    public init(directory: String) throws {
        let doc = try JSON.parse(try FileIO.read(directory + "/task.json"))
        guard let name = doc["task"]?.string, let t = SyntheticTask(rawValue: name) else {
            throw CortexError.parse("task.json: task must be one of \(SyntheticTask.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        task = t
        description = doc
        model = try Model.load(directory: directory + "/model")
        let d = model.inputSize
        let w = WeightSource(file: try SafetensorsFile(path: directory + "/head.safetensors"))
        let vocab = try doc.intField("vocab_size", default: t.vocabSize, in: 1...1_000_000, core: "task.json")
        let classes = try doc.intField("n_classes", default: 2, in: 1...1_000_000, core: "task.json")
        embedding = try w.tensor("embed.weight", shape: [vocab, d])
        head = try Linear(w, "classifier", in: model.outputSize, out: classes)
        if let stray = w.unused.first { throw CortexError.missingTensor("head.safetensors: unexpected tensor '\(stray)'") }
    }

    public var vocabSize: Int { embedding.shape[0] }
    public var classes: Int { head.outFeatures }

    /// Logits `[N, C]` for N token sequences of one length, run in batches of `batch`.
    public func logits(_ tokens: [[Int]], batch: Int = 256) throws -> Tensor {
        let N = tokens.count, C = classes, d = model.inputSize
        let out = try Tensor(zeros: [N, C])
        guard N > 0 else { return out }
        let T = tokens[0].count
        guard T > 0, tokens.allSatisfy({ $0.count == T }) else {
            throw CortexError.shapeMismatch("token sequences must be non-empty and of one length")
        }
        if let bad = tokens.lazy.flatMap({ $0 }).first(where: { $0 < 0 || $0 >= vocabSize }) {
            throw CortexError.invalidArgument("token \(bad) is outside the vocabulary [0, \(vocabSize))")
        }
        var start = 0
        while start < N {
            let B = min(batch, N - start)
            let x = try Tensor(zeros: [B, T, d])
            for b in 0..<B {
                for t in 0..<T { (x.data + (b * T + t) * d).update(from: embedding.data + tokens[start + b][t] * d, count: d) }
            }
            let y = try model.forward(x, state: try model.makeState(batch: B))
            let last = try Tensor(zeros: [B, d])
            for b in 0..<B { (last.data + b * d).update(from: y.data + (b * T + T - 1) * d, count: d) }
            withExtendedLifetime((x, y, last)) { head.apply(last.data, rows: B, into: out.data + start * C) }
            start += B
        }
        return out
    }

    /// Accuracy of argmax(logits) against `labels`, with the logits.
    public func evaluate(tokens: [[Int]], labels: [Int]) throws -> (accuracy: Double, logits: Tensor) {
        guard tokens.count == labels.count else { throw CortexError.shapeMismatch("\(tokens.count) sequences but \(labels.count) labels") }
        let l = try logits(tokens)
        let C = classes
        var correct = 0
        for (n, label) in labels.enumerated() {
            let row = Array(UnsafeBufferPointer(start: l.data + n * C, count: C))
            if row.indices.max(by: { row[$0] < row[$1] }) == label { correct += 1 }
        }
        return (labels.isEmpty ? 0 : Double(correct) / Double(labels.count), l)
    }

    /// The evaluation report (JSON): on the exported test set (`source: "testset"`, with
    /// PyTorch's accuracy and the max logit difference), or on `samples` fresh sequences
    /// from Cortex's generator (`source: "generated"`, `seed`).
    public func report(options: JSON, directory: String) throws -> JSON {
        let source = options["source"]?.string ?? "testset"
        var fields: [(String, JSON)] = [("task", .string(task.rawValue)), ("parameters", description["parameters"] ?? .null),
                                        ("source", .string(source))]
        switch source {
        case "testset":
            let file = try SafetensorsFile(path: directory + "/testset.safetensors")
            let tokensT = try file.tensor("tokens"), labelsT = try file.tensor("labels"), ref = try file.tensor("logits")
            guard tokensT.rank == 2, labelsT.count == tokensT.shape[0], ref.shape == [tokensT.shape[0], classes] else {
                throw CortexError.shapeMismatch("testset.safetensors: tokens [N, T], labels [N], logits [N, C] expected")
            }
            let T = tokensT.shape[1]
            let flat = tokensT.toArray().map { Int($0) }
            let tokens = (0..<tokensT.shape[0]).map { Array(flat[($0 * T)..<(($0 + 1) * T)]) }
            let labels = labelsT.toArray().map { Int($0) }
            let (acc, logits) = try evaluate(tokens: tokens, labels: labels)
            let a = logits.toArray(), b = ref.toArray()
            let err = zip(a, b).map { abs($0 - $1) }.max() ?? 0
            fields += [("samples", .number(Double(labels.count))), ("accuracy", .number(acc)),
                       ("pytorch_accuracy", description["pytorch"]?["test_accuracy"] ?? .null),
                       ("max_logit_error", .number(Double(err)))]
        case "generated":
            let n = try options.intField("samples", default: 1000, in: 1...1_000_000, core: "evaluate")
            let seed = try options.intField("seed", default: 0, in: 0...Int(Int32.max), core: "evaluate")
            let (tokens, labels) = try task.generate(count: n, parameters: description["parameters"] ?? .null, seed: UInt64(seed))
            let (acc, _) = try evaluate(tokens: tokens, labels: labels)
            fields += [("samples", .number(Double(n))), ("seed", .number(Double(seed))), ("accuracy", .number(acc))]
        default:
            throw CortexError.parse("evaluate: source must be \"testset\" or \"generated\"")
        }
        return .object(fields)
    }
}
