import { expect, test } from 'vitest'
import { WriteBudget } from '../src/pool/host-writes.js'

test('a worker’s host writes are bounded in count and bytes, with the limit in the refusal', () => {
  const budget = new WriteBudget({ files: 3, bytes: 100 })
  budget.charge('/p/a.snap', 40)
  budget.charge('/p/b.snap', 60)
  expect(() => budget.charge('/p/c.snap', 1)).toThrow(/may not write \/p\/c\.snap .*already had 2 files \(100 bytes\).*limit is 3 files, 100 bytes/)
  budget.charge('/p/d.snap', 0)
  expect(() => budget.charge('/p/e.snap', 0)).toThrow(/limit is 3 files/)
})
