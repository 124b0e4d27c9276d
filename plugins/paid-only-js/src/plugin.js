// `paid-only-js`: keeps the rows of paying users (`level` = "paid"), like the Rust `paid-only`
// plugin, written in JavaScript against the same WIT contract (sdk/wit/plugin.wit). Batches
// arrive and leave as Arrow IPC streams, read and written with the `apache-arrow` package.
import { tableFromIPC, tableToIPC, makeData, RecordBatch, Table, Struct, vectorFromArray } from "apache-arrow";

const NAME = "paid-only-js";
const VERSION = "0.1.0";
let level = "paid";

/** The rows of `table` at `keep`, as one batch with the same schema. */
function take(table, keep) {
  const children = table.schema.fields.map((field, i) => {
    const column = table.getChildAt(i);
    const values = keep.map((row) => column.get(row));
    return vectorFromArray(values, field.type).data[0];
  });
  const data = makeData({ type: new Struct(table.schema.fields), length: keep.length, nullCount: 0, children });
  return new Table(new RecordBatch(table.schema, data));
}

export const guest = {
  init(config) {
    const parsed = config.trim() === "" ? {} : JSON.parse(config);
    for (const key of Object.keys(parsed ?? {})) {
      if (key !== "level") throw `unknown config key \`${key}\` (known: level)`;
    }
    if (parsed?.level !== undefined) level = String(parsed.level);
    return { name: NAME, version: VERSION, inputs: ["level"], stateful: false };
  },

  process(batch) {
    const table = tableFromIPC(batch);
    const levels = table.getChild("level");
    if (levels === null) throw "input column `level` is missing from the batch";
    const keep = [];
    for (let row = 0; row < table.numRows; row++) {
      if (levels.get(row) === level) keep.push(row);
    }
    if (keep.length === 0) return [];
    return [{ name: "out", batch: tableToIPC(take(table, keep), "stream") }];
  },

  onWatermark(_eventTimeMs) {
    return [];
  },

  snapshot() {
    return new Uint8Array();
  },

  restore(_state) {},
};
