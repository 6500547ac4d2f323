import CCortex
import Cortex

/// `cx_task_evaluate`: score a trained task model directory (scripts/train_tasks.py).
@_cdecl("cx_task_evaluate")
public func cx_task_evaluate(_ dir: UnsafePointer<CChar>?, _ options: UnsafePointer<CChar>?,
                             _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_task_evaluate") {
        guard let dir else { throw CortexError.invalidArgument("dir is NULL") }
        let path = String(cString: dir)
        let opts: JSON = try options.map { try JSON.parse(String(cString: $0)) } ?? .object([])
        guard opts.objectPairs != nil else { throw CortexError.parse("options_json must be a JSON object") }
        let classifier = try TaskClassifier(directory: path)
        try copyOut(try classifier.report(options: opts, directory: path).serialized, buf, cap, needed)
    }
}
