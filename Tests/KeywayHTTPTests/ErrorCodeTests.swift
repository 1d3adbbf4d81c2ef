import Foundation
import HTTPTypes
import KeywayCore
import Testing

@testable import KeywayHTTP

/// Every error code is declared once (`KeywayError.Code.all`), has a status, and is documented.
@Suite struct ErrorCodeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The codes in the first column of the README's error table.
    static func readmeCodes() throws -> Set<String> {
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let table = try #require(readme.range(of: "| code | status | meaning |"))
        let rows = readme[table.upperBound...].split(separator: "\n").dropFirst().prefix { $0.hasPrefix("|") }
        return Set(
            rows.flatMap { row in
                row.split(separator: "|").first.map { cell in
                    cell.split(separator: "`").enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
                } ?? []
            }
        )
    }

    /// The codes the OpenAPI document's `Error` schema lists.
    static func documentCodes() throws -> Set<String> {
        let data = try Data(contentsOf: root.appendingPathComponent("Sources/KeywayHTTP/Resources/openapi.json"))
        let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let components = try #require(document["components"] as? [String: Any])
        let error = try #require((components["schemas"] as? [String: Any])?["Error"] as? [String: Any])
        let code = try #require((error["properties"] as? [String: Any])?["code"] as? [String: Any])
        return Set(try #require(code["examples"] as? [String]))
    }

    @Test func everyCodeButInternalErrorHasAStatusOtherThan500() {
        for code in KeywayError.Code.all where code != .internalError {
            #expect(KeywayError(code, "").status != .internalServerError, "\(code) has no status: add it to KeywayError.status")
        }
        #expect(Set(KeywayError.Code.all).count == KeywayError.Code.all.count, "a code is listed twice")
    }

    @Test func everyCodeIsInTheReadmeErrorTableAndNothingElseIs() throws {
        let listed = try Self.readmeCodes()
        let declared = Set(KeywayError.Code.all.map(\.rawValue))
        #expect(declared.subtracting(listed).isEmpty, "missing from the README's error table: \(declared.subtracting(listed).sorted())")
        #expect(listed.subtracting(declared).isEmpty, "the README lists codes nothing returns: \(listed.subtracting(declared).sorted())")
    }

    @Test func everyAPICodeIsInTheOpenAPIDocumentAndNothingElseIs() throws {
        let listed = try Self.documentCodes()
        let api = Set(KeywayError.Code.all.filter { !KeywayError.Code.outsideTheAPI.contains($0) }.map(\.rawValue))
        #expect(api.subtracting(listed).isEmpty, "missing from the document's Error codes: \(api.subtracting(listed).sorted())")
        #expect(listed.subtracting(api).isEmpty, "the document lists codes the API never returns: \(listed.subtracting(api).sorted())")
    }
}
